"""Fusion: per-modality GRU results -> one vector per sample."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LateFusion(nn.Module):
    """Concatenate each modality's final GRU state (in a fixed modality order).

    A modality absent from a sample (length 0) contributes a zero state: its GRU returns h0 = 0.
    """

    def __init__(self, input_dims: dict[str, int]):
        super().__init__()
        self.modalities = sorted(input_dims)
        self.out_features = sum(input_dims.values())

    def forward(self, states: dict[str, Tensor], outputs: dict[str, Tensor], lengths: dict[str, Tensor],
                present: dict[str, Tensor]) -> Tensor:
        return torch.cat([states[m] for m in self.modalities], dim=-1)
