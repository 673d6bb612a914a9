"""CUDA graphs of gru_mm.nn.GRU with new lengths every call, as in training.

`python -m gru_mm.bench.gru_graphs --device cuda` times, per case, ms per fwd+bwd pipelined over
calls (the host may run ahead of the GPU; one synchronize at the end), the way a training loop runs:
- nn.GRU eager, padded (its final states sit at T, not at the true ends) and packed;
- gru_mm eager (graphs=False, path auto);
- gru_mm graphed (graphs=True, path padded_gather, where auto might keep segments): every call
  takes the next of 8 length sets whose longest lengths differ but share one T bucket, so one
  graph serves them all (``captures`` should read 1);
- nn.GRU graphed through torch.cuda.make_graphed_callables (fixed shape; the fair graphed reference).
Then, with TF32 off, a graph replay against the same layer's eager call with graphs=False on the
same lengths: the largest absolute difference (float32 rounding of another time size: ~1e-7).
And the GPU-busy time of eager padded nn.GRU (torch.profiler, sum of its kernels per call): a graph
of the same cuDNN kernels cannot beat that, so "faster eager nn.GRU / that busy time" bounds the
speed-up any CUDA graph can give at that point (where it is under 1.5x, only faster kernels help).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gru_mm.nn.gru import GRU
from gru_mm.nn.gru_graphs import bucket_steps

# (hidden, batch, T, bidirectional): the cases of ../shared/perf/h100-2026-11-27/gpu_graphs.py
CASES = (
    (64, 32, 400, False),
    (64, 32, 400, True),
    (128, 16, 200, False),
    (256, 32, 400, False),
    (64, 32, 1500, False),  # long: cuDNN's persistent kernel is GPU-bound, little host to remove
    (128, 128, 1500, False),
)
CASES_MORE = ((512, 32, 400, False),)
INPUT = 64
LENGTH_SETS = 8


def length_sets(batch: int, steps: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    """n log-normal length sets (median steps/5) whose longest lengths differ within steps' bucket."""
    rng = np.random.default_rng(seed)
    low = steps  # the shortest longest-length in steps' bucket
    while low > 1 and bucket_steps(low - 1) == bucket_steps(steps):
        low -= 1
    sets = []
    for _ in range(n):
        lens = np.clip(np.round(np.exp(rng.normal(math.log(steps / 5), 0.8, batch))), 1, steps)
        lens = lens.astype(np.int64)
        top = int(rng.integers(low, steps + 1))
        lens = np.minimum(lens, top)
        lens[rng.integers(batch)] = top
        sets.append(torch.from_numpy(lens))
    assert len({bucket_steps(int(s.max())) for s in sets}) == 1
    return sets


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _pipelined_ms(step, n: int, device: str) -> float:
    for _ in range(3):
        step(0)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
    _sync(device)
    return 1e3 * (time.perf_counter() - t0) / n


def run_case(hidden: int, batch: int, steps: int, bidirectional: bool, n: int, dev: str = "cuda") -> dict:
    """One case; dev "cpu" only smoke-tests this code (tests put a stand-in capturer in gru_graphs)."""
    torch.manual_seed(0)
    sets = length_sets(batch, steps, LENGTH_SETS)
    x = torch.randn(batch, steps, INPUT, device=dev, requires_grad=True)
    ref = nn.GRU(INPUT, hidden, batch_first=True, bidirectional=bidirectional).to(dev)
    eager = GRU(INPUT, hidden, bidirectional=bidirectional).to(dev)
    eager.load_state_dict(ref.state_dict())
    # padded_gather: auto would keep some of these batches on eager segments; this bench is about graphs
    graphed = GRU(INPUT, hidden, bidirectional=bidirectional, path="padded_gather", graphs=True).to(dev)
    graphed.load_state_dict(ref.state_dict())
    sample = x.detach().clone().requires_grad_()
    ref_graphed = copy.deepcopy(ref)
    if dev == "cuda":
        ref_graphed = torch.cuda.make_graphed_callables(ref_graphed, (sample,))

    def nn_padded(i):
        o, h = ref(x)
        (o.sum() + h.sum()).backward()

    def nn_packed(i):
        lens = sets[i % LENGTH_SETS]
        o, h = ref(pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False))
        o = pad_packed_sequence(o, batch_first=True, total_length=steps)[0]
        (o.sum() + h.sum()).backward()

    def ours(model):
        def step(i):
            o, h = model(x, sets[i % LENGTH_SETS])
            (o.sum() + h.sum()).backward()

        return step

    def nn_graphed(i):
        o, h = ref_graphed(x)
        (o.sum() + h.sum()).backward()

    res = {
        "case": f"h{hidden}-b{batch}-t{steps}-{'bi' if bidirectional else 'uni'}",
        "nn.GRU padded": _pipelined_ms(nn_padded, n, dev),
        "nn.GRU packed": _pipelined_ms(nn_packed, n, dev),
        "gru_mm eager": _pipelined_ms(ours(eager), n, dev),
        "gru_mm graphed": _pipelined_ms(ours(graphed), n, dev),
        "nn.GRU graphed": _pipelined_ms(nn_graphed, n, dev),
    }
    res["nn.GRU padded GPU busy"] = _gpu_busy_ms(nn_padded)
    res["captures"] = graphed._graph_cache.captures
    res["failed"] = list(graphed._graph_cache.failed.values())
    res["replays"] = graphed._graph_cache.replays
    res["replay vs eager max|diff|"] = _replay_diff(graphed, eager, x.detach(), sets)
    return res


def _gpu_busy_ms(step, calls: int = 3) -> float:
    """Sum of the CUDA kernels' device time per call (nan if the profiler sees none)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(calls):
                step(i)
            torch.cuda.synchronize()
        kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        busy_us = sum(e.self_device_time_total for e in kernels) / calls
    except Exception:  # a profiler that cannot start must not cost the timings
        return float("nan")
    return busy_us / 1e3 if busy_us else float("nan")


def _replay_diff(graphed: GRU, eager: GRU, x: torch.Tensor, sets: list[torch.Tensor]) -> float:
    """Largest |difference| of outputs, final states and input gradients, TF32 off, over 3 length sets."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        worst = 0.0
        replays = graphed._graph_cache.replays
        for i in range(3):  # the first call of this (TF32 off) shape is eager: compare the later ones
            got = []
            for model in (graphed, eager):
                xi = x.clone().requires_grad_()
                o, h = model(xi, sets[i])
                (o.sum() + 2 * h.sum()).backward()
                got.append((o.detach(), h.detach(), xi.grad))
            if i:
                worst = max(worst, *(float((a - b).abs().max()) for a, b in zip(*got, strict=True)))
        if graphed._graph_cache.replays - replays < 2:
            raise RuntimeError("the exactness check replayed no graph")
        return worst
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gru_mm.bench.gru_graphs", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda",), default="cuda")
    p.add_argument("--calls", type=int, default=50, help="timed calls per implementation and case")
    p.add_argument("--more", action="store_true", help="also hidden 512")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gru_graphs: needs a CUDA device", file=sys.stderr)
        return 2
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    )
    cols = ["nn.GRU padded", "nn.GRU packed", "gru_mm eager", "gru_mm graphed", "nn.GRU graphed"]
    print(
        f"{'case':20} " + " ".join(f"{c:>14}" for c in cols) + "  graphed vs faster eager nn.GRU, "
        "vs graphed nn.GRU, captures/replays, replay vs eager max|diff|, nn.GRU padded GPU busy ms "
        "and the bound it sets (faster eager nn.GRU / busy)   (ms per fwd+bwd, pipelined)"
    )
    failed = 0
    for case in CASES + (CASES_MORE if args.more else ()):
        try:
            r = run_case(*case, n=args.calls)
        except Exception as e:  # report and go on
            print(f"{case}: FAILED {type(e).__name__}: {str(e)[:300]}")
            failed += 1
            continue
        best = min(r["nn.GRU padded"], r["nn.GRU packed"])
        print(
            f"{r['case']:20} "
            + " ".join(f"{r[c]:>14.3f}" for c in cols)
            + f"  {best / r['gru_mm graphed']:.2f}x, {r['nn.GRU graphed'] / r['gru_mm graphed']:.2f}x, "
            f"{r['captures']}/{r['replays']}, {r['replay vs eager max|diff|']:.2e}, "
            f"busy {r['nn.GRU padded GPU busy']:.3f} (bound {best / r['nn.GRU padded GPU busy']:.2f}x)",
            flush=True,
        )
        if r["failed"]:
            print(f"  capture failed, ran eagerly: {r['failed'][0][:300]}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
