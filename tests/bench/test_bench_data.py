"""`gru-mm-bench data`: data.storage=memory and store, each case in processes of its own, on a generated
manifest of real wav and png files."""

import json

import pytest

from gru_mm.bench.cli import main


@pytest.mark.slow
def test_data_bench_builds_reads_and_measures_both_storages(tmp_path, capsys):
    out = tmp_path / "data.json"
    assert main(["data", "--quick", "--data-dir", str(tmp_path), "--out", str(out)]) == 0
    records = {r["storage"]: r for r in json.loads(out.read_text())}
    assert set(records) == {"memory", "store"}
    for r in records.values():
        assert r["samples"] == 60
        assert r["build_decoded"] == 120  # one wav and one frame folder per sample, decoded on the first run
        assert r["open_decoded"] == 0  # the second run decodes nothing: the cache (or the store) serves it
        assert r["read_samples"] == 48  # the whole training split (80 %), every sample once
        assert r["read_samples_per_s"] > 0 and r["build_s"] > 0 and r["cache_mb"] > 0
        assert r["build_peak_rss_mb"] > 100 and r["read_peak_rss_mb"] > 100  # a python + torch process
    # the store keeps frames compact (uint8), the memory path's cache as float32
    assert records["store"]["cache_mb"] < records["memory"]["cache_mb"]
    printed = capsys.readouterr().out
    assert "| 60 | memory |" in printed and "| 60 | store |" in printed
    assert set(tmp_path.iterdir()) == {out, tmp_path / "corpus-60"}  # the caches are cleaned up
