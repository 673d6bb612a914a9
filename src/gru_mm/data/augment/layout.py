"""Steps-first sequences through torchaudio's time-last transforms."""

from __future__ import annotations

from torch import Tensor, nn


class TimeLast(nn.Module):
    """Applies `transform`, which takes [..., F, T] (torchaudio's layout), to a [T, F] sequence."""

    def __init__(self, transform: nn.Module):
        super().__init__()
        self.transform = transform

    def forward(self, steps: Tensor) -> Tensor:
        return self.transform(steps.transpose(-1, -2)).transpose(-1, -2)
