"""`gru-mm-bench train`: the real training step against random batches + packed nn.GRU, one table."""

import json

import pytest

from gru_mm.bench.cli import main


@pytest.mark.slow
def test_train_bench_reports_both_pipelines_and_buckets_away_the_padding(tmp_path, capsys):
    out = tmp_path / "train.json"
    small = ["data.source.n_train=256", "data.source.n_val=32", "data.source.n_test=32"]
    args = [
        "train",
        "--configs",
        "default",
        "--steps",
        "4",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(out),
    ]
    assert main([*args, *small]) == 0
    ours, base = json.loads(out.read_text())
    assert (ours["impl"], base["impl"]) == ("gru_mm", "baseline")
    for r in (ours, base):
        assert r["steps"] == 4 and r["samples_per_s"] > 0 and 0 <= r["data_wait_frac"] < 1
        assert set(r["padding_ratio"]) == {"audio", "video"} and r["peak_mem_mb"] > 100
    # bucketing by every modality vs random batches padded to the batch maximum (1.7-1.8 on avdigits)
    assert max(ours["padding_ratio"].values()) < min(base["padding_ratio"].values())
    assert ours["speedup_over_baseline"] == pytest.approx(
        ours["samples_per_s"] / base["samples_per_s"], rel=0.01
    )
    assert "gru_mm / baseline samples/s" in capsys.readouterr().out
