"""`gru-mm-bench decode`: real rank processes decode a generated manifest, shared out or each all."""

import json

from gru_mm.bench.cli import main


def test_decode_bench_runs_real_ranks_and_shared_decodes_each_file_about_once(tmp_path, capsys):
    out = tmp_path / "decode.json"
    assert main(["decode", "--rows", "8", "--seconds", "0.2", "--rounds", "1", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["mode"], r["ranks"], r["threads"]) for r in records] == [
        ("each", 2, 1),
        ("shared", 2, 1),
        ("threads", 1, 1),
        ("threads", 1, 2),
        ("processes", 1, 1),  # data.storage=store: decoding processes (in "threads")
        ("processes", 1, 2),
    ]
    for r in records:  # every rank read every row, decoded or from the cache
        assert r["decoded_total"] + r["from_cache_total"] == r["ranks"] * 8 and r["wall_s"] > 0
    # shared: every file decoded at least once; each rank decodes its own half first, so at most one
    # rank's half can be decoded twice (by a rank that reached it before its owner wrote it): <= 12.
    # Unshared ranks started together walk the same order and decode most files twice (up to 16).
    assert 8 <= records[1]["decoded_total"] <= 12
    assert [r["decoded_total"] for r in records[2:]] == [8, 8, 8, 8]  # threads, processes: each file once
    assert "decoded" in capsys.readouterr().out
