"""gru-mm-bench gru: record format, exactness flags, CLI."""

import json

import pytest

from gru_mm.bench import gru as bench
from gru_mm.bench.cli import main

KEYS = {"case", "impl", "device", "ms_median", "real_tokens_per_s", "exact"}


def test_time_case_records_and_exactness():
    recs = bench.time_case(bench.Case(16, 6, "lognormal", 12), "cpu", reps=1, warmup=0)
    assert {r["impl"] for r in recs} == set(bench.IMPLS)
    for r in recs:
        assert r.keys() >= KEYS and r["ms_median"] > 0 and r["real_tokens_per_s"] > 0
        assert r["case"] == "h16-b6-lognormal-t12" and r["device"] == "cpu"
    exact = {r["impl"]: r["exact"] for r in recs}
    assert exact.pop("torch_padded") is False  # its final states sit at T, not at the true ends
    assert all(exact.values()), exact
    assert next(r for r in recs if r["impl"] == "gru_mm")["path"] == "scan"


def test_fast_implementations_get_extra_rounds_within_the_budget():
    case, impls = bench.Case(8, 4, "uniform", 6), ("gru_mm", "torch_padded")
    plain = bench.time_case(case, "cpu", reps=2, warmup=0, impls=impls, extra_budget_ms=0.0)
    assert [r["reps"] for r in plain] == [2, 2]
    # a tiny case takes well under a millisecond: a generous budget fills up to MAX_REPS
    more = bench.time_case(case, "cpu", reps=2, warmup=0, impls=impls, extra_budget_ms=1e6)
    assert [r["reps"] for r in more] == [bench.MAX_REPS, bench.MAX_REPS]


def test_cli_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "grid", lambda device, quick: [bench.Case(8, 4, "uniform", 6)])
    out = tmp_path / "b.json"
    assert main(["gru", "--quick", "--reps", "1", "--out", str(out)]) == 0
    recs = json.loads(out.read_text())
    assert len(recs) == len(bench.IMPLS) and all(r.keys() >= KEYS for r in recs)
    text = capsys.readouterr().out
    assert "slowest case" in text and "h8-b4-uniform-t6" in text
    assert main(["gru", "--quick", "--reps", "1", "--hidden", "16", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == []  # no grid point of that size


def test_grids():
    quick = bench.grid("cpu", quick=True)
    assert len(quick) == 4 and all(c.tmax <= 100 for c in quick)
    full = bench.grid("cuda", quick=False)
    assert {c.hidden for c in full} == {64, 128, 256, 512, 1024} and max(c.tmax for c in full) == 1500
    lens = bench.Case(64, 32, "lognormal", 400).lengths()
    assert int(lens.max()) == 400 and int(lens.min()) >= 1


def test_cli_refuses_missing_cuda(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gru", "--device", "cuda"]) == 2
    with pytest.raises(SystemExit):
        main(["gru", "--device", "tpu"])


def test_gru_host_measures_a_version(monkeypatch):
    from gru_mm.bench import gru_host
    from gru_mm.nn import gru

    monkeypatch.setattr(gru_host, "DECISION_CASES", (bench.Case(64, 8, "lognormal", 40),) * 3)
    res = gru_host.measure(gru, reps=1)
    assert all(us > 0 and path in ("padded_gather", "segments") for us, path in res["decision_us"].values())
    for ms, ops, kernels in res["padded_gather"].values():
        assert ms > 0 and ops > kernels > 0
    # the host time before the first RNN kernel, for this layer and for nn.GRU, both directions
    assert sorted(res["prekernel_us"]) == [
        "D1-b16-t24",
        "D1-b16-t24 nn.GRU",
        "D2-b16-t24",
        "D2-b16-t24 nn.GRU",
    ]
    assert all(us > 0 for us in res["prekernel_us"].values())
    assert len(gru_host.report({"this": res})) > 5


def test_persistent_summary_states_both_targets():
    """The persistent kernels' lines compare the torch cell with graphed nn.GRU at hidden >= 256
    (target 2x) and cho2014 with the faster eager nn.GRU (target 1.5x), and count the points met."""
    times = {
        "h256-b32-uniform-t400": {"torch_padded": 3.0, "torch_packed": 4.0, "torch_padded:graphs": 2.5,
                                  "gru_mm:persistent": 1.0, "cho2014:persistent": 3.5},
        "h512-b32-uniform-t400": {"torch_padded": 6.0, "torch_packed": 5.0, "torch_padded:graphs": 4.0,
                                  "gru_mm:persistent": 2.5, "cho2014:persistent": 10.0},
    }  # fmt: skip
    by_case = {
        name: {impl: {"ms_median": ms, "exact": True, "hidden": int(name[1:4])} for impl, ms in row.items()}
        for name, row in times.items()
    }
    lines = bench.summarize_persistent(by_case)
    assert len(lines) == 2 + 2 + 2
    assert "torch cell at 1.60-2.50x graphed nn.GRU at hidden >= 256; 1 of 2 points >= 2.0x" in lines[-2]
    assert (
        "cho2014 at 1.17-2.00x the time of the faster eager nn.GRU at hidden >= 128; 1 of 2 points"
        in lines[-1]
    )
    assert bench.summarize_persistent({"h64-b32-uniform-t400": by_case["h256-b32-uniform-t400"]})  # any size
    assert "gru_mm:persistent" in bench.impls_for(bench.Case(512, 32, "uniform", 400), "cuda")
    assert "gru_mm:persistent" not in bench.impls_for(bench.Case(1024, 32, "uniform", 400), "cuda")
    assert "gru_mm:persistent" not in bench.impls_for(bench.Case(256, 32, "uniform", 100), "cpu")
