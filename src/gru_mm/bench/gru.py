"""Forward+backward timing of GRU implementations on variable-length batches.

Each grid point ("case") is one batch: hidden size, batch size, length distribution and longest
length. Implementations are timed round-robin (one run of each per round, median over rounds), so
a noisy shared machine affects them alike; fast ones get extra rounds (see EXTRA_BUDGET_MS).
Exactness is checked, not assumed: four sequences of the batch (shortest, longest, two others) are
also run alone, unpadded, through the same weights, and an implementation is "exact" when its
outputs and final states for them match to 1e-4.

On CUDA two graphed implementations join (GRAPH_IMPLS): "gru_mm:graphs" (GRU(graphs=True)) and
"torch_padded:graphs" (nn.GRU through torch.cuda.make_graphed_callables, fwd+bwd, the fair graphed
reference). They get GRAPH_WARMUP extra untimed calls (the first call of a shape runs eagerly, the
second captures); the exactness of "gru_mm:graphs" is checked on a replay.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gru_mm.nn import cho2014_triton, gru_persistent
from gru_mm.nn.gru import GRU

INPUT_SIZE = 128
EXACT_TOL = 1e-4


@dataclass(frozen=True)
class Case:
    hidden: int
    batch: int
    dist: str  # "lognormal" (most of a padded batch is padding) or "uniform"
    tmax: int

    @property
    def name(self) -> str:
        return f"h{self.hidden}-b{self.batch}-{self.dist}-t{self.tmax}"

    def lengths(self, seed: int = 0) -> Tensor:
        rng = np.random.default_rng(seed)
        if self.dist == "lognormal":
            lens = np.exp(rng.normal(math.log(self.tmax / 6), 0.9, self.batch))
        else:
            lens = rng.uniform(1, self.tmax, self.batch)
        lens = np.clip(np.round(lens), 1, self.tmax).astype(np.int64)
        lens[rng.integers(self.batch)] = self.tmax  # the longest sets the padded length
        return torch.from_numpy(lens)


def grid(device: str, quick: bool) -> list[Case]:
    dists = ("lognormal", "uniform")
    if quick:
        return [Case(h, 32, d, 100) for h in (64, 128) for d in dists]
    hiddens, batches = (64, 128, 256, 512, 1024), (32, 128)
    # 2 CPU cores cannot run 1500-step batches at hidden 1024 in reasonable time
    tmaxes = (400, 1500) if device == "cuda" else (100,)
    return [Case(h, b, d, t) for t in tmaxes for h in hiddens for b in batches for d in dists]


IMPLS = (
    "gru_mm",
    "gru_mm:padded_gather",
    "gru_mm:segments",
    "gru_mm:packed",
    "gru_mm:scan",
    "torch_padded",
    "torch_packed",
    "cho2014",
)
# On CUDA cho2014 runs the Triton kernel; "cho2014:loop" times the step loop it replaces (short
# cases only: the loop is launch-bound and would eat the time box).
CUDA_EXTRA = ("cho2014:loop",)
GRAPH_IMPLS = ("gru_mm:graphs", "torch_padded:graphs")  # CUDA only
# CUDA only: path="persistent" for both cells (gru_mm.nn.gru_persistent), up to its maximum hidden size
PERSISTENT_IMPLS = ("gru_mm:persistent", "cho2014:persistent")
GRAPH_WARMUP = 2  # untimed calls before timing: an eager one, then the capture


def impls_for(case: Case, device: str) -> tuple[str, ...]:
    if device != "cuda":
        return IMPLS
    persistent = PERSISTENT_IMPLS if case.hidden <= gru_persistent.MAX_HIDDEN else ()
    return IMPLS + (CUDA_EXTRA if case.tmax <= 400 else ()) + GRAPH_IMPLS + persistent


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _models(case: Case, device: str) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    ref = nn.GRU(INPUT_SIZE, case.hidden, batch_first=True).to(device)
    out: dict[str, nn.Module] = {"torch_padded": ref, "torch_packed": ref}
    for impl in IMPLS:
        if impl.startswith("gru_mm"):
            path = impl.split(":")[1] if ":" in impl else "auto"
            m = GRU(INPUT_SIZE, case.hidden, path=path).to(device)
            m.load_state_dict(ref.state_dict())
            out[impl] = m
    out["cho2014"] = GRU(INPUT_SIZE, case.hidden, cell="cho2014").to(device)
    out["cho2014:loop"] = out["cho2014"]
    if device == "cuda":
        out["gru_mm:graphs"] = GRU(INPUT_SIZE, case.hidden, graphs=True).to(device)
        out["gru_mm:graphs"].load_state_dict(ref.state_dict())
        out["torch_padded:graphs"] = copy.deepcopy(ref)  # graphed in time_case, given a sample input
        out["gru_mm:persistent"] = GRU(INPUT_SIZE, case.hidden, path="persistent").to(device)
        out["gru_mm:persistent"].load_state_dict(ref.state_dict())
        out["cho2014:persistent"] = GRU(INPUT_SIZE, case.hidden, cell="cho2014", path="persistent").to(device)
        out["cho2014:persistent"].load_state_dict(out["cho2014"].state_dict())
    return out


def _step(impl: str, model: nn.Module, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    if impl in ("torch_padded", "torch_padded:graphs"):
        return model(x)
    if impl == "torch_packed":
        p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        o, h = model(p)
        return pad_packed_sequence(o, batch_first=True, total_length=x.shape[1])[0], h
    if impl == "cho2014:loop":
        cho2014_triton.ENABLED = False
        try:
            return model(x, lengths)
        finally:
            cho2014_triton.ENABLED = True
    return model(x, lengths)


def _is_exact(impl: str, model: nn.Module, x: Tensor, lengths: Tensor) -> bool:
    """Compare with each of four sequences run alone (no padding, so no packing question)."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # compare in fp32
    try:
        return _matches_alone(impl, model, x, lengths)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _matches_alone(impl: str, model: nn.Module, x: Tensor, lengths: Tensor) -> bool:
    lens = lengths.tolist()
    order = np.argsort(lens, kind="stable")
    picks = sorted(
        {int(order[0]), int(order[-1]), int(order[len(order) // 3]), int(order[2 * len(order) // 3])}
    )
    if impl == "gru_mm:graphs":
        out, h = _replayed(model, x, lengths)
    with torch.no_grad():
        if impl != "gru_mm:graphs":
            out, h = _step(impl, model, x, lengths)
        for i in picks:
            n = lens[i]
            xi = x[i : i + 1, :n]
            if impl.startswith("cho2014"):
                oi, hi = _step(impl, model, xi, torch.tensor([n]))
            else:
                # a graphed nn.GRU only takes its captured shape: run the alone rows through a copy
                ref = model if impl in ("torch_padded", "torch_packed") else None
                if ref is None:
                    ref = nn.GRU(INPUT_SIZE, model.hidden_size, batch_first=True).to(x.device)
                    ref.load_state_dict(model.state_dict())
                oi, hi = ref(xi)
            scale = max(1.0, float(oi.abs().max()))
            if float((out[i, :n] - oi[0]).abs().max()) > EXACT_TOL * scale:
                return False
            if float((h[-1, i] - hi[-1, 0]).abs().max()) > EXACT_TOL * scale:
                return False
    return True


def _replayed(model: GRU, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """A graphed layer's outputs from a graph replay (training mode: x needs its gradient), or from
    its eager path where it takes no graph (auto picking segments)."""
    from gru_mm.nn.gru_graphs import EAGER_CALLS

    with torch.enable_grad():
        xg = x.detach().requires_grad_()
        for _ in range(EAGER_CALLS + 1):  # under this TF32 setting the shape is new: eager, then capture
            out, h = model(xg, lengths)
            out, h = out.detach(), h.detach()  # drops the autograd graph, so the next call may replay
    return out, h


# Short runs are noisy (clocks, the host, a shared machine) and the >= 0.95x target is tight where
# a whole fwd + bwd takes ~2 ms: an implementation gets extra rounds, up to MAX_REPS samples, while
# its samples add up to less than this; slow ones stay at `reps`.
EXTRA_BUDGET_MS = 100.0
MAX_REPS = 25


def time_case(
    case: Case,
    device: str,
    reps: int,
    warmup: int,
    impls: tuple[str, ...] | None = None,
    extra_budget_ms: float = EXTRA_BUDGET_MS,
) -> list[dict]:
    impls = impls or impls_for(case, device)
    lengths = case.lengths()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(case.batch, case.tmax, INPUT_SIZE, generator=gen)
    mask = (torch.arange(case.tmax)[None, :] < lengths[:, None]).unsqueeze(-1)
    x = (x * mask).to(device).requires_grad_()
    models = _models(case, device)
    if "torch_padded:graphs" in impls:
        sample = x.detach().clone().requires_grad_()  # another buffer: each call copies x in, as ours does
        try:
            models["torch_padded:graphs"] = torch.cuda.make_graphed_callables(
                models["torch_padded:graphs"], (sample,)
            )
        except RuntimeError as e:  # seen on an H100 (cuDNN stream mismatch): the case goes on without it
            print(f"{case.name}: graphing nn.GRU failed, left out: {str(e)[:200]}", file=sys.stderr)
            impls = tuple(i for i in impls if i != "torch_padded:graphs")
    runs: dict[str, Callable[[], None]] = {}
    for impl in impls:
        model = models[impl]

        def run(impl=impl, model=model):
            out, h = _step(impl, model, x, lengths)
            (out.sum() + h.sum()).backward()

        runs[impl] = run
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for impl in impls:
        if impl in GRAPH_IMPLS:
            for _ in range(GRAPH_WARMUP):
                runs[impl]()

    def wants_more(impl: str) -> bool:
        got = times[impl]
        return len(got) < reps or (len(got) < max(reps, MAX_REPS) and sum(got) < extra_budget_ms)

    for i in range(warmup + max(reps, MAX_REPS)):
        todo = list(runs) if i < warmup else [impl for impl in runs if wants_more(impl)]
        if not todo:
            break
        for impl in todo:  # round-robin, so machine noise hits all alike
            _sync(device)
            t0 = time.perf_counter()
            runs[impl]()
            _sync(device)
            if i >= warmup:
                times[impl].append((time.perf_counter() - t0) * 1e3)
    real = int(lengths.sum())
    records = []
    for impl in impls:
        ms = statistics.median(times[impl])
        rec = {
            "case": case.name,
            "impl": impl,
            "device": device,
            "ms_median": round(ms, 3),
            "reps": len(times[impl]),
            "real_tokens_per_s": round(real / (ms / 1e3), 1),
            "exact": _is_exact(impl, models[impl], x.detach(), lengths),
            "hidden": case.hidden,
            "batch": case.batch,
            "dist": case.dist,
            "tmax": case.tmax,
            "padded_over_real": round(case.batch * case.tmax / real, 2),
        }
        if impl == "gru_mm":
            rec["path"] = models[impl].choose_path(lengths, device)
        if impl == "gru_mm:graphs":  # 2 expected: the timed shape, and the exactness check's (TF32 off)
            rec["captures"] = models[impl]._graph_cache.captures
            # auto keeps segments eager (they skip GPU work on padding); everything else is graphed
            rec["path"] = "graphed" if rec["captures"] else models[impl].choose_path(lengths, device)
            failed = list(models[impl]._graph_cache.failed.values())
            if failed:  # the capture raised and the layer ran eagerly: say why
                rec["capture_failed"] = failed[0][:300]
        records.append(rec)
    # Free this case's graphs and their memory pools before the next case (on the H100 the graphs of
    # 26 cases held 78 GiB and the 27th ran out of memory)
    for model in models.values():
        cache = getattr(model, "_graph_cache", None)
        if cache is not None:
            cache.clear()
            cache.pool = None
    del models, runs
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return records


def summarize(records: list[dict]) -> list[str]:
    """One line per case: the layer's speed relative to the faster nn.GRU, and the checks."""
    lines = []
    by_case: dict[str, dict[str, dict]] = {}
    for r in records:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
    header = (
        f"{'case':28} {'pad/real':>8} {'gru_mm':>9} {'path':>13} {'padded':>9} {'packed':>9} "
        f"{'cho2014':>9} {'vs best':>7} {'vs pkd':>6}  exact(gru_mm, padded)"
    )
    lines.append(header)
    worst = math.inf
    for name, recs in by_case.items():
        g, p, k = recs.get("gru_mm"), recs.get("torch_padded"), recs.get("torch_packed")
        c = recs.get("cho2014")
        if not (g and p and k):
            continue
        best = min(p["ms_median"], k["ms_median"])
        ratio = best / g["ms_median"]
        worst = min(worst, ratio)
        lines.append(
            f"{name:28} {g['padded_over_real']:>8} {g['ms_median']:>9.1f} {g.get('path', ''):>13} "
            f"{p['ms_median']:>9.1f} {k['ms_median']:>9.1f} {c['ms_median'] if c else float('nan'):>9.1f} "
            f"{ratio:>6.2f}x {k['ms_median'] / g['ms_median']:>5.2f}x  {g['exact']}, {p['exact']}"
        )
    if worst < math.inf:
        lines.append(
            f"slowest case: gru_mm at {worst:.2f}x the faster of padded/packed nn.GRU (target >= 0.95x)"
        )
    small = [
        r["torch_packed"]["ms_median"] / r["gru_mm"]["ms_median"]
        for r in by_case.values()
        if "gru_mm" in r and "torch_packed" in r and r["gru_mm"]["hidden"] <= 128
    ]
    if small:
        lines.append(f"hidden <= 128: gru_mm at least {min(small):.2f}x packed nn.GRU (GPU target >= 3x)")
    lines += summarize_graphs(by_case)
    lines += summarize_persistent(by_case)
    cho = [
        r["cho2014"]["ms_median"] / min(r["torch_padded"]["ms_median"], r["torch_packed"]["ms_median"])
        for r in by_case.values()
        if {"cho2014", "torch_padded", "torch_packed"} <= r.keys() and 128 <= r["cho2014"]["hidden"] <= 512
    ]
    if cho:
        lines.append(
            f"hidden 128-512: cho2014 takes {min(cho):.2f}-{max(cho):.2f}x the time of the faster nn.GRU "
            "(targets: <= 2x CPU, <= 3x GPU)"
        )
    return lines


GRAPH_TARGET = 1.5  # issue 14: graphed gru_mm at least this times the faster eager nn.GRU at every point


def summarize_graphs(by_case: dict[str, dict[str, dict]]) -> list[str]:
    """CUDA graphs: one line per case, and whether the target holds at every point."""
    rows = []
    for name, recs in by_case.items():
        g, p, k = recs.get("gru_mm:graphs"), recs.get("torch_padded"), recs.get("torch_packed")
        if g and p and k:
            rows.append((name, g, min(p["ms_median"], k["ms_median"]), recs.get("torch_padded:graphs")))
    if not rows:
        return []
    lines = [
        "CUDA graphs (ms fwd+bwd; 'vs eager' = faster eager nn.GRU / graphed gru_mm, target >= "
        f"{GRAPH_TARGET}x; 'vs graphed' = graphed nn.GRU / graphed gru_mm):",
        f"  {'case':28} {'graphed':>9} {'eager':>9} {'nn eager':>9} {'nn graphed':>10} "
        f"{'vs eager':>8} {'vs graphed':>10}  exact captures path",
    ]
    ratios = []
    for name, g, best, ng in rows:
        eager = by_case[name].get("gru_mm")
        ratio = best / g["ms_median"]
        ratios.append(ratio)
        vs_ng = f"{ng['ms_median'] / g['ms_median']:.2f}x" if ng else "-"
        lines.append(
            f"  {name:28} {g['ms_median']:>9.2f} {eager['ms_median'] if eager else float('nan'):>9.2f} "
            f"{best:>9.2f} {ng['ms_median'] if ng else float('nan'):>10.2f} {ratio:>7.2f}x {vs_ng:>10}  "
            f"{g['exact']} {g.get('captures', '')} {g.get('path', '')}"
        )
    for name, g, _, _ in rows:
        if g.get("capture_failed"):
            lines.append(f"  {name}: CAPTURE FAILED, ran eagerly: {g['capture_failed']}")
    met = sum(r >= GRAPH_TARGET for r in ratios)
    lines.append(
        f"graphs: gru_mm graphed at least {min(ratios):.2f}x the faster eager nn.GRU; {met} of "
        f"{len(ratios)} points >= {GRAPH_TARGET}x (target: all)"
    )
    with_ng = [ng["ms_median"] / g["ms_median"] for _, g, _, ng in rows if ng]
    if with_ng:
        lines.append(
            f"graphs: graphed gru_mm at {min(with_ng):.2f}-{max(with_ng):.2f}x the speed of graphed nn.GRU "
            "(padded over the whole batch: its final states are not at the true ends)"
        )
    return lines


# issue 14 item 2: the torch cell's persistent kernel at least 2x graph-captured cuDNN at hidden
# 256-1024 (batch <= 128), and cho2014's at most 1.5x the time of the faster eager nn.GRU
PERSISTENT_VS_GRAPHED = 2.0
CHO_PERSISTENT_MAX = 1.5


def summarize_persistent(by_case: dict[str, dict[str, dict]]) -> list[str]:
    """Persistent kernels: one line per case, and whether their targets hold."""
    rows = [(name, recs) for name, recs in by_case.items() if "gru_mm:persistent" in recs]
    if not rows:
        return []
    lines = [
        "persistent kernels (ms fwd+bwd; 'vs graphed' = graphed nn.GRU / persistent, target >= "
        f"{PERSISTENT_VS_GRAPHED}x at hidden >= 256; 'cho vs nn' = cho2014 persistent / faster eager "
        f"nn.GRU, target <= {CHO_PERSISTENT_MAX}x):",
        f"  {'case':28} {'torch':>9} {'cho2014':>9} {'nn eager':>9} {'nn graphed':>10} {'vs graphed':>10} "
        f"{'cho vs nn':>9}  exact",
    ]
    vs_graphed, cho_ratio = [], []
    for name, recs in rows:
        g, c = recs["gru_mm:persistent"], recs.get("cho2014:persistent")
        p, k, ng = recs.get("torch_padded"), recs.get("torch_packed"), recs.get("torch_padded:graphs")
        best = min(p["ms_median"], k["ms_median"]) if p and k else math.nan
        vg = ng["ms_median"] / g["ms_median"] if ng else math.nan
        cr = c["ms_median"] / best if c else math.nan
        if ng and g["hidden"] >= 256:
            vs_graphed.append(vg)
        if c and g["hidden"] >= 128:
            cho_ratio.append(cr)
        lines.append(
            f"  {name:28} {g['ms_median']:>9.2f} {c['ms_median'] if c else math.nan:>9.2f} {best:>9.2f} "
            f"{ng['ms_median'] if ng else math.nan:>10.2f} {vg:>9.2f}x {cr:>8.2f}x  "
            f"{g['exact']}, {c['exact'] if c else '-'}"
        )
    if vs_graphed:
        met = sum(r >= PERSISTENT_VS_GRAPHED for r in vs_graphed)
        lines.append(
            f"persistent: torch cell at {min(vs_graphed):.2f}-{max(vs_graphed):.2f}x graphed nn.GRU "
            f"at hidden >= 256; {met} of {len(vs_graphed)} points >= {PERSISTENT_VS_GRAPHED}x (target: all)"
        )
    if cho_ratio:
        met = sum(r <= CHO_PERSISTENT_MAX for r in cho_ratio)
        lines.append(
            f"persistent: cho2014 at {min(cho_ratio):.2f}-{max(cho_ratio):.2f}x the time of the faster "
            f"eager nn.GRU at hidden >= 128; {met} of {len(cho_ratio)} points <= {CHO_PERSISTENT_MAX}x "
            "(target: all)"
        )
    return lines


def run_grid(
    device: str,
    quick: bool,
    out: Path | None,
    reps: int | None = None,
    max_seconds: float | None = None,
    print_fn: Callable[[str], None] = print,
    impls: tuple[str, ...] | None = None,
    hiddens: set[int] | None = None,
) -> list[dict]:
    """impls: only these implementations (in their order; those a case does not run are skipped);
    hiddens: only the grid points of these hidden sizes."""
    cases = [c for c in grid(device, quick) if hiddens is None or c.hidden in hiddens]
    reps = reps or (3 if quick or device == "cpu" else 5)
    warmup = 1  # the first call pays cuDNN's setup and Triton's compilation
    records: list[dict] = []
    start = time.perf_counter()
    for i, case in enumerate(cases):
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            print_fn(f"time box of {max_seconds:.0f}s reached: {len(cases) - i} cases not run")
            break
        chosen = None if impls is None else tuple(i for i in impls if i in impls_for(case, device))
        recs = time_case(case, device, reps, warmup, chosen)
        records.extend(recs)
        cells = "  ".join(
            f"{r['impl']}={r['ms_median']:.1f}ms{'' if r['exact'] else '(inexact)'}" for r in recs
        )
        print_fn(f"[{i + 1}/{len(cases)}] {case.name}: {cells}")
        if out is not None:  # written after every case so a time-out still leaves results
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(records, indent=1))
    if out is not None and not records:  # nothing ran: say so in the file too
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("[]")
    for line in summarize(records):
        print_fn(line)
    return records


def markdown(records: list[dict]) -> str:
    """A Markdown table (ms, forward+backward) of a run, one row per case, for docs/benchmarks.md."""
    by_case: dict[str, dict[str, dict]] = {}
    for r in records:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
    present = {r["impl"] for r in records}
    cols = ["gru_mm", "torch_padded", "torch_packed", *[i for i in IMPLS if i.startswith("gru_mm:")]]
    cols += [i for i in ("cho2014", *CUDA_EXTRA, *GRAPH_IMPLS, *PERSISTENT_IMPLS) if i in present]
    cols = [c for c in cols if c in present]
    graphs = "gru_mm:graphs" in present
    head = ["case", "padded/real", *cols, "gru_mm path", "gru_mm vs faster nn.GRU"]
    head += ["graphed gru_mm vs faster eager nn.GRU"] if graphs else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, recs in by_case.items():
        cells = [name, str(next(iter(recs.values()))["padded_over_real"])]
        for c in cols:
            r = recs.get(c)
            ms = (
                ""
                if r is None
                else f"{r['ms_median']:.2f}"
                if r["ms_median"] < 10
                else f"{r['ms_median']:.1f}"
            )
            cells.append(ms + ("" if r is None or r["exact"] else " (inexact)"))
        g, p, k = recs.get("gru_mm"), recs.get("torch_padded"), recs.get("torch_packed")
        ratio = f"{min(p['ms_median'], k['ms_median']) / g['ms_median']:.2f}x" if g and p and k else ""
        cells += [g.get("path", "") if g else "", ratio]
        if graphs:
            gg = recs.get("gru_mm:graphs")
            ok = gg and p and k
            cells.append(f"{min(p['ms_median'], k['ms_median']) / gg['ms_median']:.2f}x" if ok else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m gru_mm.bench.gru RESULTS.json  ->  Markdown table
    import sys

    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
