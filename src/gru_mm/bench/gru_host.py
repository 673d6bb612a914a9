"""Host-side overhead of gru_mm.nn.GRU's CUDA paths, measured on the CPU.

At hidden <= 128 a whole forward + backward on a GPU takes ~2 ms, so what the host does around
the kernels (deciding the path, building index maps, dispatching small ops) is the gap to the
bare padded nn.GRU. `python -m gru_mm.bench.gru_host` measures that part without a GPU:

- decision: microseconds per call of what forward does before the first kernel for path "auto"
  on CUDA: check_lengths + Layout + the path decision (the same code runs on any machine);
- padded_gather fwd+bwd on the CPU with torch.gru replaced by a stand-in of cuDNN's single
  fused call (one output op forward, one backward, cuDNN's output layout), so what is left is
  our code: host ms per call (op dispatch, autograd, index building) and the number of aten ops
  dispatched per fwd+bwd (torch.profiler), the same code path as on CUDA apart from the kernels
  (on the CPU, ATen's real GRU would add thousands of per-step ops and hide ours).
- pre-kernel: host us from the layer's call to its first RNN kernel call, next to torch's nn.GRU
  on the padded tensor. In a fwd+bwd timed alone this is GPU idle time; what comes after the
  call is queued while the recurrence runs, so it mostly hides behind it.
One torch thread; medians over repeats. `measure(module)` takes any copy of gru_mm.nn.gru, so an
older version can be compared in the same process.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

from gru_mm.bench.gru import Case

# ops that only make views or allocate, without a kernel on a GPU
_METADATA = {
    "aten::" + n
    for n in [
        "as_strided",
        "alias",
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "unsqueeze",
        "squeeze",
        "transpose",
        "t",
        "select",
        "slice",
        "narrow",
        "unbind",
        "split",
        "split_with_sizes",
        "expand",
        "detach",
        "lift_fresh",
        "resolve_conj",
        "resolve_neg",
        "empty",
        "empty_strided",
        "empty_like",
        "new_empty_strided",
        "resize_",
        "to",
        "contiguous",
        "result_type",
    ]
}

DECISION_CASES = (
    Case(64, 32, "lognormal", 400),
    Case(64, 32, "uniform", 400),
    Case(128, 128, "lognormal", 1500),
    Case(512, 128, "lognormal", 400),
    Case(1024, 32, "lognormal", 400),
)


def _median_us(fn, reps: int, inner: int = 20) -> float:
    fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(samples)


def decision_us(gru_mod: ModuleType, case: Case, reps: int) -> tuple[float, str]:
    """Host us per decision; a plan cache, where the version has one, is emptied before each call
    (a new batch of lengths every step, as in training)."""
    pkg = gru_mod.__name__.rsplit(".", 1)[0]
    layout = importlib.import_module(pkg + ".gru_layout")
    cache = getattr(importlib.import_module(pkg + ".gru_plan"), "_PLAN_CACHE", {})
    m = gru_mod.GRU(128, case.hidden)
    lengths = case.lengths()
    B, T = len(lengths), case.tmax

    def decide():
        cache.clear()
        lay = layout.Layout(layout.check_lengths(lengths, B, T), T, torch.device("cpu"))
        return m._resolve(lay, "cuda")[0]

    return _median_us(decide, reps), decide()


class _FusedRNN(torch.autograd.Function):
    """Stand-in for cuDNN's GRU call: one op forward, one backward, output laid out time-major."""

    @staticmethod
    def forward(ctx, x, hx, w_hh, batch_first):
        ctx.x_shape = x.shape
        rows, steps = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
        y = x.new_zeros(steps, rows, w_hh.shape[1])
        return (y.transpose(0, 1) if batch_first else y), hx.clone()

    @staticmethod
    def backward(ctx, gy, gh):
        return gy.new_zeros(ctx.x_shape), gh, None, None


def _stand_in_gru(x, hx, weights, bias, layers, dropout, train, bidirectional, batch_first):
    y, h = _FusedRNN.apply(x, hx, weights[1], batch_first)
    return y, h


def padded_gather_cost(
    gru_mod: ModuleType, case: Case, layers: int, bidirectional: bool, reps: int
) -> tuple[float, int, int]:
    """(host ms, aten ops dispatched, of them kernel ops) per fwd+bwd of padded_gather, hidden 8.

    Kernel ops: innermost aten ops that are neither views nor allocations, i.e. the ones that
    launch a kernel (or a copy) on a GPU; the stand-in RNN's own two are not counted.
    """
    torch.manual_seed(0)
    m = gru_mod.GRU(8, 8, layers, bidirectional=bidirectional, path="padded_gather")
    lengths = case.lengths()
    x = torch.randn(case.batch, case.tmax, 8, requires_grad=True)

    def step():
        out, h = m(x, lengths)
        (out.sum() + h.sum()).backward()

    real = torch.gru
    torch.gru = _stand_in_gru
    try:
        ms = _median_us(step, reps, inner=10) / 1e3
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
    finally:
        torch.gru = real
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    kernels = [
        e
        for e in aten
        if e.name not in _METADATA and not any(c.name.startswith("aten::") for c in e.cpu_children)
    ]
    return ms, len(aten), len(kernels) - 2


class _FirstKernelClock:
    """Patches the RNN kernel call (torch.gru for gru_mm, nn.GRU's _VF.gru) with the stand-in and
    records when it is first reached: the host time a GPU would sit idle before the recurrence."""

    def __init__(self):
        self.at: float | None = None

    def _call(self, *args):
        if self.at is None:
            self.at = time.perf_counter()
        return _stand_in_gru(*args)

    def __enter__(self):
        import torch.nn.modules.rnn as rnn

        clock, vf = self, rnn._VF

        class _VF:  # nn.GRU calls _VF.gru; everything else passes through
            def __getattr__(self, name):
                return clock._call if name == "gru" else getattr(vf, name)

        self._saved = (torch.gru, rnn._VF)
        torch.gru, rnn._VF = self._call, _VF()
        return self

    def __exit__(self, *exc):
        import torch.nn.modules.rnn as rnn

        torch.gru, rnn._VF = self._saved


def prekernel_us(gru_mod: ModuleType | None, case: Case, bidirectional: bool, reps: int) -> float:
    """Host us from the layer's call to its first RNN kernel call (padded_gather; `gru_mod` None:
    torch's nn.GRU on the padded tensor, the reference). Sizes as in padded_gather_cost."""
    torch.manual_seed(0)
    x = torch.randn(case.batch, case.tmax, 8, requires_grad=True)
    lengths = case.lengths()
    if gru_mod is None:
        ref = torch.nn.GRU(8, 8, batch_first=True, bidirectional=bidirectional)
        call = lambda: ref(x)  # noqa: E731
    else:
        m = gru_mod.GRU(8, 8, bidirectional=bidirectional, path="padded_gather")
        call = lambda: m(x, lengths)  # noqa: E731
    samples = []
    with _FirstKernelClock() as clock:
        for i in range(20 * reps + 20):
            clock.at = None
            t0 = time.perf_counter()
            call()
            if i >= 20:  # warm-up: caches, the allocator
                samples.append((clock.at - t0) * 1e6)
    return statistics.median(samples)


def index_maps_us(gru_mod: ModuleType, case: Case, bidirectional: bool, reps: int) -> tuple[float, str]:
    """(host us, what it leaves to the device) to build padded_gather's maps before its first kernel.

    Layout included. Before `Layout.padded_maps`, NumPy built the [B, T] mask, the [B] end indices
    and the [B*T] reversal, and each was copied on its own (pageable; the copies are no-ops on the
    CPU and not timed here). `padded_maps` copies a few [B] vectors and expands them on the device;
    it was split in two halves (only the input mask before the first kernel), and is one copy again
    since cuDNN's RNN calls were found to block the host (no host work hides behind them).
    """
    layout = importlib.import_module(gru_mod.__name__.rsplit(".", 1)[0] + ".gru_layout")
    lengths, T, cpu = case.lengths(), case.tmax, torch.device("cpu")
    split = hasattr(getattr(layout, "PaddedMaps", None), "_post")
    one_copy = hasattr(layout.Layout, "padded_maps_host") or getattr(layout.PaddedMaps, "ONE_COPY", False)

    def build():
        lay = layout.Layout(lengths, T, cpu)
        if split or one_copy:
            return lay.padded_maps(sort=False, reverse=bidirectional)
        maps = (lay.mask, *lay.end_index(lay.lens))
        return (*maps, lay.reverse_index(lay.lens, lay.max_len)) if bidirectional else maps

    if split:
        left = "1 copy + 1 small kernel before, 1 copy after"
    elif getattr(getattr(layout, "PaddedMaps", None), "ONE_COPY", False):
        left = "1 copy + 1 small kernel before"
    elif one_copy:
        # arange, lt, gt; the reversal adds arange, mul, sub, where (batches without empty rows)
        left = f"1 copy, {7 if bidirectional else 3} small kernels"
    else:
        left = f"{4 if bidirectional else 3} copies"
    return _median_us(build, reps), left


def measure(gru_mod: ModuleType, reps: int = 15) -> dict:
    out: dict = {"decision_us": {}, "index_maps_us": {}, "padded_gather": {}, "prekernel_us": {}}
    for case in DECISION_CASES:
        out["decision_us"][case.name] = decision_us(gru_mod, case, reps)
    for case in (DECISION_CASES[0], DECISION_CASES[2]):
        for bi in (False, True):
            out["index_maps_us"][f"{case.name} D{2 if bi else 1}"] = index_maps_us(gru_mod, case, bi, reps)
    tiny = Case(8, 16, "lognormal", 24)  # small enough that the elementwise work is negligible
    for bi in (False, True):
        key = f"D{2 if bi else 1}-b16-t24"
        out["prekernel_us"][key] = prekernel_us(gru_mod, tiny, bi, reps)
        out["prekernel_us"][key + " nn.GRU"] = prekernel_us(None, tiny, bi, reps)
    for layers, bi in ((1, False), (2, True)):
        out["padded_gather"][f"L{layers}-D{2 if bi else 1}-b16-t24"] = padded_gather_cost(
            gru_mod, tiny, layers, bi, reps
        )
    return out


def report(results: dict[str, dict]) -> list[str]:
    """Lines comparing one or more measured versions (name -> measure())."""
    names = list(results)
    lines = ["decision for 'auto' on CUDA, host us per call (check_lengths + Layout + choice):"]
    for case in next(iter(results.values()))["decision_us"]:
        cells = "  ".join(
            f"{n}: {results[n]['decision_us'][case][0]:8.1f} ({results[n]['decision_us'][case][1]})"
            for n in names
        )
        lines.append(f"  {case:28} {cells}")
    lines.append("padded_gather maps before the first kernel, us per call (Layout + maps), and device work:")
    for key in next(iter(results.values()))["index_maps_us"]:
        cells = "  ".join("{}: {:7.1f} ({})".format(n, *results[n]["index_maps_us"][key]) for n in names)
        lines.append(f"  {key:28} {cells}")
    lines.append("padded_gather, host us from the call to the first RNN kernel (nn.GRU: torch's, the same):")
    for key in next(iter(results.values()))["prekernel_us"]:
        cells = "  ".join(f"{n}: {results[n]['prekernel_us'][key]:7.1f}" for n in names)
        lines.append(f"  {key:28} {cells}")
    lines.append(
        "padded_gather fwd+bwd, stand-in RNN, CPU: host ms per call, "
        "aten ops dispatched / of them kernel ops:"
    )
    for key in next(iter(results.values()))["padded_gather"]:
        cells = "  ".join(
            "{}: {:5.2f} ms {:3d}/{:2d} ops".format(n, *results[n]["padded_gather"][key]) for n in names
        )
        lines.append(f"  {key:28} {cells}")
    return lines


def load_ref(ref: str, into: Path) -> ModuleType:
    """gru_mm.nn.gru as of git revision `ref`, imported as package gru_mm_ref (for before/after)."""
    root = Path(__file__).resolve().parents[3]
    tar = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "src/gru_mm"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar.stdout, check=True)
    pkg = into / "gru_mm_ref"
    (into / "src" / "gru_mm").rename(pkg)
    for f in pkg.rglob("*.py"):
        f.write_text(re.sub(r"\bgru_mm\b", "gru_mm_ref", f.read_text()))
    sys.path.insert(0, str(into))
    return importlib.import_module("gru_mm_ref.nn.gru")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gru_mm.bench.gru_host", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compare-ref", help="also measure this git revision, interleaved (before/after)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from gru_mm.nn import gru

    with tempfile.TemporaryDirectory() as tmp:
        versions = {"this": gru}
        if args.compare_ref:
            versions = {args.compare_ref[:10]: load_ref(args.compare_ref, Path(tmp)), "this": gru}
        results: dict[str, dict] = {}
        for rnd in range(2):  # two interleaved rounds: machine noise shows as their difference
            for name, mod in versions.items():
                results[f"{name}#{rnd + 1}"] = measure(mod, args.reps)
        for line in report(results):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
