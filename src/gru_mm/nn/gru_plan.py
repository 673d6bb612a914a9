"""Choosing how to run the torch cell over a batch of lengths (`resolve_path`): the packed kernel,
one padded call, or sorted segments.

"segments": sort the batch longest first and cut time into a few spans; each span is one padded
kernel call over only the sequences still alive at its start, handing the state on to the next.
This is packing at the granularity of a few kernel calls instead of one step, so it keeps the
padded kernel (and cuDNN's fast small-hidden one) while skipping most of the padding's work.

The cut points minimise a simple cost model, cost(span) = steps * (a + c * rows) + s:
a = fixed cost of a time step, c = cost per row and step, s = fixed cost per call.
Constants are rough per-device fits (see docs/benchmarks.md); a plan with one span is the plain
padded call, which "auto" then runs without sorting.

The decision is made in O(1) first (`segments_can_win`): any plan covers every step once and
every real step at least once, so it costs at least a * max_len + c * sum(lengths) + 2 s; when
even that bound is no clear win over the padded call, the planner is not run at all. Plans that
are run are cached per (lengths, cost model), so a repeated batch shape costs a dict look-up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gru_mm.nn.gru_layout import Layout

MAX_CANDIDATES = 12  # cut points considered (distinct lengths, subsampled): ~80 DP updates, tens of us
# "auto" takes segments only for a predicted cost below this share of the padded call's: sorting,
# gathers and the extra calls must pay for themselves
WIN_MARGIN = 0.8
_PLAN_CACHE: OrderedDict[tuple, list[tuple[int, int, int]]] = OrderedDict()
_PLAN_CACHE_SIZE = 256
_PLAN_LOCK = threading.Lock()  # nn.DataParallel runs replicas in threads


@dataclass(frozen=True)
class StepCost:
    per_step_us: float  # a
    per_row_step_us: float  # c
    per_call_us: float  # s

    def span(self, steps: int, rows: int) -> float:
        return steps * (self.per_step_us + self.per_row_step_us * rows) + self.per_call_us


_COSTS: dict[tuple[str, int, int], StepCost] = {}


def step_cost(device_type: str, input_size: int, hidden_size: int) -> StepCost:
    key = (device_type, input_size, hidden_size)
    cost = _COSTS.get(key)
    if cost is None:
        cost = _COSTS[key] = _step_cost(device_type, input_size, hidden_size)
    return cost


def _step_cost(device_type: str, input_size: int, hidden_size: int) -> StepCost:
    if device_type != "cpu":
        # cuDNN is latency-bound per step, plus a small cost per row and step; fitted to the H200
        # run (docs/benchmarks.md, "Why the path thresholds"). s: extra calls, pads, concatenations.
        per_step = 1.5 if hidden_size <= 128 else 40.0
        per_row = 0.05 if hidden_size <= 256 else 0.1
        return StepCost(per_step, per_row, 150.0)
    # 2-core CPU fit: ATen's per-step op dispatch and autograd nodes, then ~40 GFLOP/s
    flops = 18.0 * hidden_size * (hidden_size + input_size)  # fwd + bwd per row and step
    return StepCost(40.0, flops / 4e4, 400.0)


# Where torch's packed kernel beats one padded call on a GPU (hidden >= 512 with enough padding),
# fitted to the H200 run: docs/benchmarks.md, "Why the path thresholds".
PACKED_MIN_HIDDEN = 512
PACKED_MIN_PADDING = 1.7  # padded steps / real steps


def packed_wins(hidden_size: int, batch: int, max_len: int, total_len: int) -> bool:
    """O(1), GPU only: does torch's packed kernel beat the padded call for this batch?"""
    return hidden_size >= PACKED_MIN_HIDDEN and batch * max_len >= PACKED_MIN_PADDING * total_len


def segments_can_win(batch: int, max_len: int, total_len: int, cost: StepCost) -> bool:
    """O(1): can any plan of >= 2 spans beat WIN_MARGIN x the padded call? (A lower bound.)"""
    if batch < 2 or max_len < 2 or total_len >= batch * max_len:
        return False
    bound = cost.per_step_us * max_len + cost.per_row_step_us * total_len + 2 * cost.per_call_us
    return bound <= WIN_MARGIN * cost.span(max_len, batch)


def plan_segments(sorted_lens: np.ndarray, cost: StepCost) -> list[tuple[int, int, int]]:
    """Spans (t0, t1, rows) covering 0..max_len for lengths sorted longest first (zeros allowed)."""
    lens = sorted_lens[sorted_lens > 0]
    if lens.size == 0:
        return []
    ends = np.unique(lens)  # ascending distinct lengths: candidate cut points
    if ends.size > MAX_CANDIDATES:
        pick = np.linspace(0, ends.size - 1, MAX_CANDIDATES).round().astype(int)
        ends = ends[np.unique(pick)]
    points = [0, *ends.tolist()]
    # sequences alive at the start of a span (lens is sorted descending)
    rows_after = np.searchsorted(-lens, -np.asarray(points), side="left").tolist()
    # plain Python: ~300 scalar updates beat ~24 rounds of small NumPy calls
    rate = [cost.per_step_us + cost.per_row_step_us * r for r in rows_after]  # per step of a span from i
    best, back = [0.0], [0]
    for j in range(1, len(points)):
        pj = points[j]
        c, i = min((best[i] + (pj - points[i]) * rate[i], i) for i in range(j))  # first minimum on ties
        best.append(c + cost.per_call_us)
        back.append(i)
    spans = []
    j = len(points) - 1
    while j > 0:
        i = back[j]
        spans.append((points[i], points[j], rows_after[i]))
        j = i
    return spans[::-1]


def cached_plan(sorted_lens: np.ndarray, cost: StepCost) -> list[tuple[int, int, int]]:
    """plan_segments, memoised per (lengths, cost) in a small LRU; returns a shared list (read-only)."""
    key = (sorted_lens.tobytes(), cost)
    with _PLAN_LOCK:
        spans = _PLAN_CACHE.get(key)
        if spans is not None:
            _PLAN_CACHE.move_to_end(key)
            return spans
    spans = plan_segments(sorted_lens, cost)
    with _PLAN_LOCK:
        _PLAN_CACHE[key] = spans
        if len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    return spans


def plan_cost(spans: list[tuple[int, int, int]], cost: StepCost) -> float:
    return sum(cost.span(t1 - t0, n) for t0, t1, n in spans)


def resolve_path(
    cell: str, path: str, layout: Layout, device_type: str, input_size: int, hidden_size: int
) -> tuple[str, list[tuple[int, int, int]] | None]:
    """(path to run, segment plan or None) for a layer configured with `cell` and `path`.

    On a GPU "auto" decides in O(1) from (B, max_len, sum of lengths, sizes): torch's packed
    kernel where it wins (``packed_wins``), else whether sorted segments could beat the padded
    call at all (``segments_can_win``, a lower bound on any plan); only then is the planner run
    (cached per lengths). No device tensor is read.
    """
    if path == "persistent":  # either cell; opt-in until GPU timings say where it wins
        return path, None
    if cell == "cho2014":
        return "cho2014", None
    if path == "auto" and device_type == "cpu":
        return "scan", None
    if path in ("packed", "scan", "padded_gather"):
        return path, None
    batch, max_len, total = layout.batch_size, layout.max_len, layout.total
    if path == "auto" and (layout.uniform or batch < 2):
        return "padded_gather", None
    if path == "auto" and packed_wins(hidden_size, batch, max_len, total):
        return "packed", None
    cost = step_cost(device_type, input_size, hidden_size)
    if path == "auto" and not segments_can_win(batch, max_len, total, cost):
        return "padded_gather", None
    spans = cached_plan(layout.sorted_lens, cost)
    if path == "segments":
        return path, spans
    # sorting, gathers and extra calls must pay for themselves: ask for a clear predicted win
    if len(spans) <= 1 or plan_cost(spans, cost) > WIN_MARGIN * cost.span(max_len, batch):
        return "padded_gather", None
    return "segments", spans
