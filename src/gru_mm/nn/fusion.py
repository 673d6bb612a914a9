"""Fusion: per-modality results -> one vector per sample.

Each fusion class declares what it consumes:
  consumes = "states": each modality has run through its own GRU; the fusion sees the GRU's
                       per-step outputs and final state (late, attention, tensor, lmf);
  consumes = "steps":  the fusion sees each modality's encoded steps and runs its own GRU over
                       them (early, event: see fusion_steps.py).
A modality absent from a sample is replaced by a learned stand-in (`FusionInput.absent`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gru_mm.nn.masks import step_mask

STATES, STEPS = "states", "steps"


@dataclass
class FusionInput:
    """One modality's batch as a fusion sees it.

    steps:   [B, T, F] per-step features, zeros at padding: GRU outputs ("states" fusions) or
             encoder outputs ("steps" fusions).
    lengths: [B] int64 on the CPU; 0 where the sample lacks the modality.
    present: [B] bool on the data's device.
    absent:  [F] (or [D] for "states" fusions) learned stand-in for a sample lacking the modality.
    state:   [B, D] final GRU state, the absent stand-in already in place ("states" fusions only).
    times:   [B, T] step times in seconds where the data has them, else None.
    """

    steps: Tensor
    lengths: Tensor
    present: Tensor
    absent: Tensor
    state: Tensor | None = None
    times: Tensor | None = None


class LateFusion(nn.Module):
    """Concatenate each modality's final GRU state (absent: its learned stand-in), in a fixed order."""

    consumes = STATES

    def __init__(self, input_dims: dict[str, int]):
        super().__init__()
        self.modalities = sorted(input_dims)
        self.out_features = sum(input_dims.values())

    def forward(self, inputs: dict[str, FusionInput]) -> Tensor:
        return torch.cat([inputs[m].state for m in self.modalities], dim=-1)


class AttentionFusion(nn.Module):
    """Attention pooling over each modality's GRU outputs, then a gated sum across modalities.

    Pooling: additive attention scores per step, softmax over real steps only (padding gets weight
    exactly 0). Each pooled vector is projected to `dim`; per feature, a softmax over modalities of
    learned gate scores weighs the projections. A sample lacking a modality pools nothing: its
    learned stand-in takes the pooled vector's place.
    """

    consumes = STATES

    def __init__(self, input_dims: dict[str, int], dim: int = 128, attention_dim: int = 64):
        super().__init__()
        self.modalities = sorted(input_dims)
        self.score = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1, bias=False)
                )
                for m, d in input_dims.items()
            }
        )
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})
        self.gate = nn.ModuleDict({m: nn.Linear(dim, dim) for m in input_dims})
        self.out_features = dim

    def pool(self, m: str, x: FusionInput) -> tuple[Tensor, Tensor]:
        """(pooled [B, D], weights [B, T]); rows without real steps pool to zeros (replaced later)."""
        mask = step_mask(x.lengths, x.steps.shape[1], x.steps.device)
        scores = self.score[m](x.steps).squeeze(-1)
        # A finite fill, not -inf: a length-0 row then gets uniform weights over zeros (finite
        # values and gradients) instead of NaN; exp(fill - max) underflows to exactly 0 elsewhere.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=1) * mask
        return torch.einsum("bt,btd->bd", weights, x.steps), weights

    def forward(self, inputs: dict[str, FusionInput]) -> Tensor:
        projected, gates = [], []
        for m in self.modalities:
            x = inputs[m]
            pooled, _ = self.pool(m, x)
            pooled = torch.where(x.present[:, None], pooled, x.absent.to(pooled.dtype))
            z = self.proj[m](pooled)
            projected.append(z)
            gates.append(self.gate[m](z))
        weights = torch.stack(gates).softmax(dim=0)  # [M, B, dim]: per feature, over modalities
        return (weights * torch.stack(projected)).sum(dim=0)


class TensorFusion(nn.Module):
    """Tensor Fusion Network (Zadeh et al. 2017): the outer product of [1, h_m] over modalities.

    The product keeps every unimodal, bimodal, ... interaction. Its size is prod(d_m + 1), so each
    state is first projected to `dim` features (null: no projection, d_m = the state size).
    """

    consumes = STATES

    def __init__(self, input_dims: dict[str, int], dim: int | None = 16):
        super().__init__()
        self.modalities = sorted(input_dims)
        sizes = {m: dim or d for m, d in input_dims.items()}
        self.proj = nn.ModuleDict(
            {m: nn.Linear(d, sizes[m]) if dim else nn.Identity() for m, d in input_dims.items()}
        )
        self.out_features = math.prod(sizes[m] + 1 for m in self.modalities)
        if self.out_features > 2**20:
            raise ValueError(f"tensor fusion would have {self.out_features} features: lower model.fusion.dim")

    def forward(self, inputs: dict[str, FusionInput]) -> Tensor:
        fused = None
        for m in self.modalities:
            h = self.proj[m](inputs[m].state)
            h1 = torch.cat([h.new_ones(h.shape[0], 1), h], dim=-1)
            fused = h1 if fused is None else (fused[:, :, None] * h1[:, None, :]).flatten(1)
        return fused


class LowRankFusion(nn.Module):
    """Low-rank multimodal fusion (LMF, Liu et al. 2018): tensor fusion with a rank-r weight.

    out = sum_r w_r * prod_m ([h_m, 1] @ W_m[r]) + b: the same interactions as tensor fusion
    followed by a linear layer, without ever building the outer product.
    """

    consumes = STATES

    def __init__(self, input_dims: dict[str, int], dim: int = 128, rank: int = 4):
        super().__init__()
        if rank < 1 or dim < 1:
            raise ValueError(f"low-rank fusion needs rank >= 1 and dim >= 1, got rank={rank}, dim={dim}")
        self.modalities = sorted(input_dims)
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(rank, d + 1, dim)) for m, d in input_dims.items()}
        )
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        for f in self.factors.values():
            nn.init.xavier_normal_(f)
        nn.init.xavier_normal_(self.rank_weights)
        self.out_features = dim

    def forward(self, inputs: dict[str, FusionInput]) -> Tensor:
        fused = None
        for m in self.modalities:
            h = inputs[m].state
            h1 = torch.cat([h, h.new_ones(h.shape[0], 1)], dim=-1)
            part = torch.einsum("bd,rdo->rbo", h1, self.factors[m])  # [rank, B, dim]
            fused = part if fused is None else fused * part
        return torch.einsum("xr,rbo->bo", self.rank_weights, fused) + self.bias
