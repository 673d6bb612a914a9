"""`gru-mm-bench train`: the real training step against random batches + packed nn.GRU, one table."""

import json
from types import SimpleNamespace

import pytest
import torch

from gru_mm.bench.cli import main
from gru_mm.bench.train import gpu_work, markdown_table


@pytest.mark.slow
def test_train_bench_reports_both_pipelines_and_buckets_away_the_padding(tmp_path, capsys):
    out = tmp_path / "train.json"
    small = ["data.source.n_train=256", "data.source.n_val=32", "data.source.n_test=32"]
    args = ["train", "--configs", "default", "--steps", "4", "--data-dir", str(tmp_path / "data")]
    variants = ["--variants", "data.num_workers=0", "data.num_workers=1 data.persistent_workers=false"]
    assert main([*args, "--out", str(out), *small, *variants]) == 0
    base, ours, workers = json.loads(out.read_text())
    assert (base["impl"], ours["impl"], workers["impl"]) == ("baseline", "gru_mm", "gru_mm")
    assert (ours["variant"], workers["variant"]) == ("w0", "w1+data.persistent_workers=false")
    for r in (base, ours, workers):
        assert r["steps"] == 4 and r["samples_per_s"] > 0 and 0 <= r["data_wait_frac"] < 1
        assert set(r["padding_ratio"]) == {"audio", "video"} and min(r["padding_ratio"].values()) >= 1
        assert r["peak_mem_mb"] > 100  # the process's peak RSS on the CPU
        assert r["gpu_busy_frac"] is None and r["h2d_per_step"] is None  # CUDA only
        assert not r["pinned"] and not r["packed"] and not r["compile"]  # on the CPU: as before
        assert r["case_s"] > 0
    assert (ours["workers"], workers["workers"]) == (0, 1)
    # bucketing by every modality vs random batches padded to the batch maximum (1.7-1.8 on avdigits)
    assert max(ours["padding_ratio"].values()) < min(base["padding_ratio"].values())
    for r in (ours, workers):
        assert r["speedup_over_baseline"] == pytest.approx(
            r["samples_per_s"] / base["samples_per_s"], rel=0.01
        )
    printed = capsys.readouterr().out
    assert "default w0: gru_mm / baseline samples/s" in printed and "data wait" in printed
    table = markdown_table([base, ours, workers])
    assert "H2D copies/step" in table and f"{ours['speedup_over_baseline']:.2f}x" in table


def test_gpu_work_counts_kernels_and_copies_but_not_annotations():
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(key, device, us, count=1, annotation=False):
        return SimpleNamespace(
            key=key, device_type=device, self_device_time_total=us, count=count, is_user_annotation=annotation
        )

    events = [
        event("Optimizer.step#AdamW.step", cuda, 41_000, annotation=True),  # spans the step: not GPU work
        event("aten::addmm", cpu, 500),  # a CPU op's self device time repeats its kernels'
        event("void RNN_blockPersist_fp_GRU<float>", cuda, 70, count=2),
        event("Memcpy HtoD (Pinned -> Device)", cuda, 5, count=10),
        event("Memcpy HtoD (Pageable -> Device)", cuda, 3, count=20),
    ]
    busy_s, copies = gpu_work(events)
    assert busy_s == pytest.approx(78e-6)
    assert copies == {"pinned": 10, "pageable": 20}
