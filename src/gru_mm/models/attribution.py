"""Which modality, and which of its steps, a prediction rests on: gradient x input at each modality's
encoded steps (what its GRU or the fusion reads), for each sample's predicted output.

A first-order attribution: one backward pass per batch, defined for every fusion and GRU cell.
Padded steps are zeros, so they get nothing; a sample lacking a modality gives it no share (the
learned stand-in that replaces it is not an input).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from gru_mm.data.batch import Seq


def _explained_output(out: Tensor, task: str) -> Tensor:
    """The scalar per sample that is explained: the predicted class's logit (multiclass; multilabel:
    the largest), else the output itself (binary, regression; several targets: their sum)."""
    if task in ("multiclass", "multilabel") and out.shape[-1] > 1:
        return out.max(dim=-1).values
    return out.reshape(out.shape[0], -1).sum(-1)


@torch.enable_grad()
def attributions(net, inputs: Mapping[str, Seq], task: str = "multiclass") -> dict[str, dict[str, Tensor]]:
    """{modality: {"steps": [B, T'] |gradient . encoded step| (zeros at padding), "lengths": [B],
    "share": [B] that modality's part of the sample's total (shares sum to 1 over modalities)}}.
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
        steps = torch.zeros(y.shape[:2], device=y.device) if g is None else (g * y).sum(-1).abs().float()
        result[m] = {"steps": steps.detach(), "lengths": encoded[m][1]}
        totals.append(steps.detach().sum(1))
    total = torch.stack(totals).sum(0).clamp_min(torch.finfo(torch.float32).tiny)
    for m, t in zip(net.modalities, totals, strict=True):
        result[m]["share"] = t / total
    return result
