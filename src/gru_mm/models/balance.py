"""Balancing the modalities of a fused model (issue 11): per-modality heads and OGM-GE.

A fused net learns the easy modality first and then starves the others of gradient (Wang et al. 2020,
"What makes training multi-modal classification networks hard?"; Peng et al. 2022, "Balanced multimodal
learning via on-the-fly gradient modulation"). Two remedies, both options of `MultimodalGRU`:

- `UnimodalHeads`: a small head per modality on that modality's own representation, with its own loss.
  With weight > 0 the training loss is fused + sum_m weight_m x loss_m (gradient blending with fixed
  weights). With weight 0 the heads are probes: they learn from detached representations, so they change
  nothing of the model's training, and still say each epoch whether a modality carries the label at all.
- `GradientModulation` (OGM-GE): after each backward pass, the encoder and GRU gradients of the modality
  that dominates the fused prediction are scaled down, and Gaussian noise of each gradient's own spread is
  added (the paper's generalization enhancement).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gru_mm.config import ConfigError
from gru_mm.nn.fusion import FusionInput
from gru_mm.nn.heads import LinearHead
from gru_mm.nn.masks import step_mask

SCORES = ("fused", "heads")  # where OGM-GE reads each modality's confidence from


READOUTS = ("state", "mean")  # what a unimodal head reads of its modality


def modality_representation(x: FusionInput, readout: str = "state") -> Tensor:
    """[B, D]: a modality's own summary; padding never counts.

    readout "state": its GRU's final state where the fusion consumes states; "mean": the mean of its steps
    over the real ones (GRU outputs, or encoded steps for early and event fusions, which run no GRU per
    modality and so always read the mean). A sample lacking the modality reads its learned stand-in."""
    if x.state is not None and readout == "state":
        return x.state
    mask = step_mask(x.lengths, x.steps.shape[1], x.steps.device).to(x.steps.dtype)
    total = torch.einsum("bt,btf->bf", mask, x.steps)
    mean = total / x.lengths.clamp(min=1).to(x.steps.device, x.steps.dtype)[:, None]
    if x.state is None:  # steps fusions: the stand-in lives in the encoded steps' space, not here
        return mean
    return torch.where(x.present[:, None], mean, x.absent.to(mean.dtype))


class UnimodalHeads(nn.Module):
    """A `LinearHead` per modality on `modality_representation`, and the weights of their losses.

    weight: every head's loss weight (0: all heads are probes on detached inputs); weights: per-modality
    multipliers of it (a modality whose product is 0 has a probe, the others an auxiliary head); readout:
    what each head reads (`modality_representation`). With weight > 0 the head's loss trains that readout:
    "state" makes the final GRU state a classifier of its own, which on long, noisy clips memorised the
    training speakers (docs/benchmarks.md, "Fused against audio alone"); "mean" trains every step's output.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        weight: float = 0.0,
        weights: Mapping[str, float] | None = None,
        readout: str = "state",
    ):
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(
                f"model.unimodal_heads.readout must be one of {', '.join(READOUTS)}, got {readout!r}"
            )
        unknown = sorted(set(weights or {}) - set(input_dims))
        if unknown:
            raise ConfigError(
                f"model.unimodal_heads.weights names {unknown}, which the model lacks "
                f"(it has {sorted(input_dims)})"
            )
        for key, value in {
            "weight": weight,
            **{f"weights.{m}": w for m, w in (weights or {}).items()},
        }.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"model.unimodal_heads.{key} must be a number >= 0, got {value!r}")
        self.heads = nn.ModuleDict({m: LinearHead(d, num_classes) for m, d in input_dims.items()})
        self.loss_weights = {m: float(weight) * float((weights or {}).get(m, 1.0)) for m in input_dims}
        self.readout = readout

    def forward(self, inputs: Mapping[str, FusionInput]) -> dict[str, Tensor]:
        out = {}
        for m, head in self.heads.items():
            rep = modality_representation(inputs[m], self.readout)
            out[m] = head(rep if self.loss_weights[m] > 0 else rep.detach())
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint from before these heads existed: they start afresh instead of failing the load.
        if not any(k.startswith(prefix) for k in state_dict):
            state_dict.update(self.state_dict(prefix=prefix))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@dataclass
class UnimodalLosses:
    """One batch's per-modality losses, over the samples that have the modality.

    objective: sum_m weight_m x loss_m, the part of the training loss the model learns from;
    probes: the sum of the probes' losses (their inputs are detached: only the probes learn from it)."""

    losses: dict[str, Tensor]
    objective: Tensor
    probes: Tensor


def unimodal_losses(
    loss_fn: nn.Module,
    logits: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    target: Tensor,
    loss_weights: Mapping[str, float],
) -> UnimodalLosses:
    losses = {}
    for m, out in logits.items():
        keep = present[m].to(out.device)
        # a batch where every sample lacks m: a zero that still reaches the head (DDP wants every gradient)
        losses[m] = loss_fn(out[keep], target[keep]) if bool(keep.any()) else out.sum() * 0.0
    zero = next(iter(logits.values())).new_zeros(())
    objective = sum((loss_weights[m] * v for m, v in losses.items() if loss_weights[m] > 0), zero)
    probes = sum((v for m, v in losses.items() if loss_weights[m] == 0), zero)
    return UnimodalLosses(losses, objective, probes)


def true_class_confidence(logits: Tensor, target: Tensor, task: str) -> Tensor:
    """[B]: the probability the output gives the true class (binary/multilabel: the true value of each output,
    averaged over outputs). OGM-GE's per-sample score."""
    if task == "multiclass":
        return logits.softmax(-1).gather(1, target.long()[:, None]).squeeze(1)
    if task in ("binary", "multilabel"):
        p = logits.reshape(target.shape).sigmoid()
        hit = torch.where(target > 0.5, p, 1 - p)
        return hit.reshape(len(hit), -1).mean(1)
    raise ValueError(f"OGM-GE scores classes; the {task} task has none (set model.ogm_ge.enabled=false)")


class GradientModulation:
    """OGM-GE (Peng et al. 2022): damp the dominant modality's gradient, then add noise.

    Each training batch scores every modality m by s_m, the mean probability of the true class given m
    alone (`score="fused"`: the fused head with every other modality absent, the analogue of the paper's
    per-modality slice of a linear classifier; `"heads"`: m's own unimodal head). Its ratio to the others is
    rho_m = s_m / mean(s_u, u != m), and after the backward pass the gradients of m's encoder and GRU are
    multiplied by k_m = 1 - tanh(alpha x (rho_m - 1)) where rho_m > 1, else k_m = 1. (The paper's Eq. 10 uses
    tanh(alpha x rho_m), which jumps from 1 to 1 - tanh(alpha) as rho_m passes 1; this form is continuous.)
    With `noise` (GE), every modulated gradient g becomes k_m g + N(0, std(g)^2), the std over g's tensor.
    With two modalities only the stronger one is ever damped, as in the paper; with more, each one that
    outscores the mean of the others is.
    """

    def __init__(self, alpha: float, noise: bool = True, score: str = "fused"):
        if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"model.ogm_ge.alpha must be a number > 0, got {alpha!r}")
        if score not in SCORES:
            raise ConfigError(f"model.ogm_ge.score must be one of {', '.join(SCORES)}, got {score!r}")
        self.alpha = float(alpha)
        self.noise = bool(noise)
        self.score = score
        # the noise's seed: the run's (seed_everything's), the same in every process, so DDP replicas
        # stay equal
        self.seed = torch.initial_seed() % 2**32

    def coefficients(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Modality -> k_m from modality -> s_m (one modality alone is never damped)."""
        out = {}
        for m, s in scores.items():
            others = [v for u, v in scores.items() if u != m]
            mean = sum(others) / len(others) if others else 0.0
            ratio = s / mean if mean > 0 else (math.inf if s > 0 and others else 1.0)
            out[m] = 1.0 - math.tanh(self.alpha * (ratio - 1.0)) if ratio > 1.0 else 1.0
        return out

    @torch.no_grad()
    def modulate(
        self,
        groups: Mapping[str, list[nn.Parameter]],
        coefficients: Mapping[str, float],
        generator: torch.Generator | None = None,
    ) -> None:
        """Scale (and with `noise`, perturb) each modality's parameter gradients in place."""
        for m, params in groups.items():
            k = coefficients[m]
            for p in params:
                if p.grad is None:
                    continue
                if self.noise and p.grad.numel() > 1:
                    std = p.grad.std()  # of the gradient as computed, before damping (the paper's Sigma)
                    noise = torch.randn(
                        p.grad.shape, generator=generator, device=p.grad.device, dtype=p.grad.dtype
                    )
                    p.grad.mul_(k).add_(noise * std)
                elif k != 1.0:
                    p.grad.mul_(k)


@torch.no_grad()
def modality_scores(net: nn.Module, parts, target: Tensor, task: str) -> Tensor:
    """[2, M] in `net.modalities` order: each modality's summed true-class confidence (see
    `GradientModulation`) over this batch's samples that have it, and their count. Sums, so that
    processes can add theirs before dividing."""
    columns = []
    for m in net.modalities:
        logits = parts.unimodal[m] if net.ogm_ge.score == "heads" else net.logits_with_only(parts.fused, m)
        keep = parts.fused[m].present
        confidence = true_class_confidence(logits.detach().float(), target, task)
        columns.append(torch.stack([confidence[keep].sum(), keep.sum().float()]))
    return torch.stack(columns, dim=1)


def apply_gradient_modulation(net: nn.Module, scores: Tensor, step: int) -> dict[str, float]:
    """OGM-GE on `net`'s gradients after a backward pass, from `modality_scores` (summed over processes);
    the noise is drawn from the run's seed and `step`. Returns modality -> the coefficient applied (a
    modality no sample of the batch had keeps its gradient: 1)."""
    sums, counts = scores.tolist()
    means = {m: s / c for m, s, c in zip(net.modalities, sums, counts, strict=True) if c > 0}
    coefficients = {m: 1.0 for m in net.modalities} | net.ogm_ge.coefficients(means)
    groups = net.modality_parameters()
    grads = [p.grad for params in groups.values() for p in params if p.grad is not None]
    if not grads:
        return coefficients
    generator = None
    if net.ogm_ge.noise:
        generator = torch.Generator(device=grads[0].device).manual_seed(net.ogm_ge.seed + int(step))
    net.ogm_ge.modulate(groups, coefficients, generator)
    return coefficients
