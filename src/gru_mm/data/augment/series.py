"""Numeric series (`series` kind): time masking (torchaudio's TimeMasking) and additive jitter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gru_mm.data.augment.layout import TimeLast


class Jitter(nn.Module):
    """Adds Gaussian noise of standard deviation `std` to every value (Um et al. 2017's "jittering").

    Written here: torchaudio's AddNoise mixes a given noise signal at an SNR, and torchvision's GaussianNoise
    is for images (it clips to [0, 1]); series are standardised features, so the noise is one line.
    """

    def __init__(self, std: float):
        super().__init__()
        if std < 0:
            raise ValueError(f"jitter std must be >= 0, got {std}")
        self.std = std

    def forward(self, steps: Tensor) -> Tensor:
        return steps + self.std * torch.randn_like(steps)


def series_augment(settings: Mapping[str, Any], step_shape: tuple[int, ...]) -> nn.Module | None:
    """Time masks (to 0: a standardised feature's mean) then jitter, on one [T, F] series; None: no-op."""
    import torchaudio

    parts: list[nn.Module] = []
    if settings["time_masks"] and settings["time_mask_param"]:
        masking = torchaudio.transforms.TimeMasking(
            settings["time_mask_param"], p=settings["max_time_fraction"]
        )
        parts += [TimeLast(masking) for _ in range(settings["time_masks"])]
    if settings["jitter_std"]:
        parts.append(Jitter(settings["jitter_std"]))
    return nn.Sequential(*parts) if parts else None
