"""Which modality, and which of its steps, a prediction rests on: gradient x input at each modality's
encoded steps (what its GRU or the fusion reads), for each sample's predicted output.

A first-order attribution: one backward pass per batch, defined for every fusion and GRU cell.
Padded steps are zeros, so they get nothing; a sample lacking a modality gives it no share (the
learned stand-in that replaces it is not an input).

The same pass gives the gradient's size at each step. How it falls with the distance from a
sequence's last step shows how far back the recurrence carries gradient: a steep fall is the
vanishing gradient of long sequences (`GradientProfile`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gru_mm.data.batch import Batch, Seq
from gru_mm.evaluation.mode import eval_mode


def _explained_output(out: Tensor, task: str) -> Tensor:
    """The scalar per sample that is explained: the predicted class's logit (multiclass; multilabel:
    the largest), else the output itself (binary, regression; several targets: their sum)."""
    if task in ("multiclass", "multilabel") and out.shape[-1] > 1:
        return out.max(dim=-1).values
    return out.reshape(out.shape[0], -1).sum(-1)


@torch.enable_grad()
def attributions(net, inputs: Mapping[str, Seq], task: str = "multiclass") -> dict[str, dict[str, Tensor]]:
    """{modality: {"steps": [B, T'] |gradient . encoded step| (zeros at padding), "grad": [B, T'] the
    gradient's L2 norm at each encoded step (zeros at padding), "lengths": [B], "share": [B] that
    modality's part of the sample's total (shares sum to 1 over modalities)}}.
    `net` is a MultimodalGRU in eval mode; nothing accumulates in its parameters' .grad."""
    encoded: dict[str, tuple[Tensor, Tensor]] = {}

    def capture(m: str):
        def hook(module, args, output):
            y, lengths = output
            if not y.requires_grad:  # a frozen encoder: its output is a leaf we can differentiate by
                y = y.detach().requires_grad_()
            encoded[m] = (y, lengths)
            return y, lengths

        return hook

    handles = [net.encoders[m].register_forward_hook(capture(m)) for m in net.modalities]
    try:
        out = net(inputs)
    finally:
        for h in handles:
            h.remove()
    ys = [encoded[m][0] for m in net.modalities]
    grads = torch.autograd.grad(_explained_output(out, task).sum(), ys, allow_unused=True)
    result, totals = {}, []
    for m, y, g in zip(net.modalities, ys, grads, strict=True):
        if g is None:
            steps = norm = torch.zeros(y.shape[:2], device=y.device)
        else:
            steps, norm = (g * y).sum(-1).abs().float(), g.float().norm(dim=-1)
        real = _real_steps(encoded[m][1], y.shape[1], y.device)
        result[m] = {"steps": steps.detach() * real, "grad": norm.detach() * real, "lengths": encoded[m][1]}
        totals.append(result[m]["steps"].sum(1))
    total = torch.stack(totals).sum(0).clamp_min(torch.finfo(torch.float32).tiny)
    for m, t in zip(net.modalities, totals, strict=True):
        result[m]["share"] = t / total
    return result


def _real_steps(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    return (torch.arange(steps).unsqueeze(0) < lengths.cpu().unsqueeze(1)).to(device)


class GradientProfile:
    """How much gradient reaches each step, by its distance from the sequence's last real step,
    accumulated over batches of `attributions(...)[modality]["grad"]`.

    Each sample's gradient norms are divided by their largest, so every sample counts alike; `curve()`
    is their mean at 0, 1, 2, ... steps before the last. `start_vs_peak()` is the mean of that ratio
    at each sample's first step (samples of 2 steps or more): near 0, the earliest steps barely move
    the prediction; near 1, the gradient reaches them undiminished.
    """

    def __init__(self):
        self.sums = torch.zeros(0, dtype=torch.float64)
        self.counts = torch.zeros(0, dtype=torch.int64)
        self.start_sum, self.start_count = 0.0, 0

    def add(self, grad: Tensor, lengths: Tensor) -> None:
        grad, lengths = grad.detach().double().cpu(), lengths.cpu()
        t = torch.arange(grad.shape[1]).unsqueeze(0)
        grad = grad * (t < lengths.unsqueeze(1))  # padding never counts
        peak = grad.max(dim=1, keepdim=True).values
        use = (lengths > 0) & (peak.squeeze(1) > 0)  # absent, or no gradient at all: nothing to compare
        if not use.any():
            return
        grad, lengths, peak = grad[use], lengths[use], peak[use]
        ratio = grad / peak
        real = t < lengths.unsqueeze(1)
        back = (lengths.unsqueeze(1) - 1 - t)[real]  # steps before the last real one
        if len(self.sums) < grad.shape[1]:
            grow = grad.shape[1] - len(self.sums)
            self.sums = torch.cat([self.sums, torch.zeros(grow, dtype=torch.float64)])
            self.counts = torch.cat([self.counts, torch.zeros(grow, dtype=torch.int64)])
        self.sums.index_add_(0, back, ratio[real])
        self.counts.index_add_(0, back, torch.ones_like(back))
        long = lengths >= 2
        self.start_sum += float(ratio[long, 0].sum())
        self.start_count += int(long.sum())

    def curve(self, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(steps before the last, mean gradient ratio) where at least `min_samples` samples reach back."""
        keep = (self.counts >= max(min_samples, 1)).numpy()
        mean = (self.sums / self.counts.clamp_min(1)).numpy()
        return np.flatnonzero(keep), mean[keep]

    def start_vs_peak(self) -> float | None:
        return self.start_sum / self.start_count if self.start_count else None


@dataclass
class AttributionSummary:
    """What one gradient pass over the test split found: the modalities' summed shares over `count`
    samples, their gradient profiles, and the first batch's (ids, attributions) to draw."""

    share_sums: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, GradientProfile] = field(default_factory=dict)
    count: int = 0
    first: tuple[list[str], dict[str, dict[str, Tensor]]] | None = None

    def metrics(self) -> dict[str, float]:
        """`test_attribution/<modality>/share` (mean over the samples) and
        `test_gradient/<modality>/start_vs_peak` (where some sample has 2 steps or more)."""
        metrics = {f"test_attribution/{m}/share": v / max(self.count, 1) for m, v in self.share_sums.items()}
        return metrics | {
            f"test_gradient/{m}/start_vs_peak": v
            for m, p in self.profiles.items()
            if (v := p.start_vs_peak()) is not None
        }

    def first_samples(self, n: int) -> tuple[list[str], dict[str, dict[str, Tensor]]]:
        """The ids and attributions of the first `n` samples of the first batch."""
        ids, result = self.first or ([], {})
        keep = list(range(min(n, len(ids))))
        return [ids[i] for i in keep], {m: {k: v[keep] for k, v in r.items()} for m, r in result.items()}

    def gradient_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per modality, the mean gradient ratio by steps before the last, where enough samples reach
        back for the mean to say something (3, or 5% of the samples)."""
        return {m: p.curve(min_samples=max(3, self.count // 20)) for m, p in self.profiles.items()}


def summarize_attributions(module, batches: Iterable[Batch], task: str = "multiclass") -> AttributionSummary:
    """Attributions of `module.net` (a MultimodalGRU) over all batches, in eval mode, on the module's
    device."""
    device = next(module.parameters()).device
    summary = AttributionSummary()
    with eval_mode(module):
        for batch in batches:
            batch = batch.to(device)
            result = attributions(module.net, batch.inputs, task)
            for m, r in result.items():
                summary.share_sums[m] = summary.share_sums.get(m, 0.0) + float(r["share"].sum())
                summary.profiles.setdefault(m, GradientProfile()).add(r["grad"], r["lengths"])
            summary.count += len(batch.ids)
            summary.first = summary.first or (batch.ids, result)
    return summary
