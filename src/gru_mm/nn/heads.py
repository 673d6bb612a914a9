"""Prediction heads."""

from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 128, dropout: float = 0.1):
        super().__init__(
            nn.LayerNorm(in_features),
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )


class LinearHead(nn.Sequential):
    """LayerNorm -> Linear: a modality's own small head (a linear read-out of its representation)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(nn.LayerNorm(in_features), nn.Linear(in_features, out_features))
