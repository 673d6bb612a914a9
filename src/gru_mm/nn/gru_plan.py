"""Choosing how to run the torch cell over a batch of lengths: one padded call, or sorted segments.

"segments": sort the batch longest first and cut time into a few spans; each span is one padded
kernel call over only the sequences still alive at its start, handing the state on to the next.
This is packing at the granularity of a few kernel calls instead of one step, so it keeps the
padded kernel (and cuDNN's fast small-hidden one) while skipping most of the padding's work.

The cut points minimise a simple cost model, cost(span) = steps * (a + c * rows) + s:
a = fixed cost of a time step, c = cost per row and step (FLOP-bound), s = fixed cost per call.
Constants are rough per-device fits (see docs/benchmarks.md); a plan with one span is the plain
padded call, which "auto" then runs without sorting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CANDIDATES = 24  # cut points considered (distinct lengths, subsampled): keeps planning < 1 ms


@dataclass(frozen=True)
class StepCost:
    per_step_us: float  # a
    per_row_step_us: float  # c
    per_call_us: float  # s

    def span(self, steps: int, rows: int) -> float:
        return steps * (self.per_step_us + self.per_row_step_us * rows) + self.per_call_us


def step_cost(device_type: str, input_size: int, hidden_size: int) -> StepCost:
    # forward + backward FLOPs per row and step, recurrent and input projection together
    flops = 18.0 * hidden_size * (hidden_size + input_size)
    if device_type != "cpu":
        # Fitted to the H100 numbers in ../shared/perf/gru-anchors.md (TF32, fwd+bwd): ~4 us/step
        # with cuDNN's small-hidden persistent kernel (H <= 128), else 15 us + 0.025 us * H; the
        # FLOPs of the rows then run at ~30 TFLOP/s. Re-fit from `gru-mm-bench gru --device cuda`.
        per_step = 4.0 if hidden_size <= 128 else 15.0 + 0.025 * hidden_size
        return StepCost(per_step, flops / 3e7, 100.0)
    # 2-core CPU fit: ATen's per-step op dispatch and autograd nodes, then ~40 GFLOP/s
    return StepCost(40.0, flops / 4e4, 400.0)


def plan_segments(sorted_lens: np.ndarray, cost: StepCost) -> list[tuple[int, int, int]]:
    """Spans (t0, t1, rows) covering 0..max_len for lengths sorted longest first (zeros allowed)."""
    lens = sorted_lens[sorted_lens > 0]
    if lens.size == 0:
        return []
    ends = np.unique(lens)  # ascending distinct lengths: candidate cut points
    if ends.size > MAX_CANDIDATES:
        pick = np.linspace(0, ends.size - 1, MAX_CANDIDATES).round().astype(int)
        ends = ends[np.unique(pick)]
    points = [0, *[int(e) for e in ends]]
    rows_after = [int((lens > p).sum()) for p in points]  # sequences alive at the start of a span
    best = [0.0] + [float("inf")] * (len(points) - 1)
    back = [0] * len(points)
    for j in range(1, len(points)):
        for i in range(j):
            c = best[i] + cost.span(points[j] - points[i], rows_after[i])
            if c < best[j]:
                best[j], back[j] = c, i
    spans = []
    j = len(points) - 1
    while j > 0:
        i = back[j]
        spans.append((points[i], points[j], rows_after[i]))
        j = i
    return spans[::-1]


def plan_cost(spans: list[tuple[int, int, int]], cost: StepCost) -> float:
    return sum(cost.span(t1 - t0, n) for t0, t1, n in spans)
