"""Log-mel audio (`audio` kind): SpecAugment (Park et al. 2019), torchaudio's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from gru_mm.data.augment.layout import TimeLast


def audio_augment(settings: Mapping[str, Any], step_shape: tuple[int, ...]) -> nn.Module | None:
    """Time and frequency masks on one [T, n_mels] sequence, filled with its mean (log-mel is not
    standardised here, so 0 would be a loud band); None when every mask is off."""
    import torchaudio

    time = settings["time_masks"] if settings["time_mask_param"] else 0
    freq = settings["freq_masks"] if settings["freq_mask_param"] else 0
    if not time and not freq:
        return None
    return TimeLast(
        torchaudio.transforms.SpecAugment(
            n_time_masks=time,
            time_mask_param=settings["time_mask_param"],
            n_freq_masks=freq,
            freq_mask_param=settings["freq_mask_param"],
            p=settings["max_time_fraction"],
            zero_masking=False,
        )
    )
