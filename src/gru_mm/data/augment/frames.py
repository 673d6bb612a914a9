"""Image frames (`frames` kind): torchvision.transforms.v2, one draw per sequence (every frame alike)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def frames_augment(settings: Mapping[str, Any], step_shape: tuple[int, ...]) -> nn.Module | None:
    """Random resized crop, horizontal flip, colour jitter and Gaussian noise on one [T, C, H, W] sequence
    of [0, 1] frames; v2 transforms draw their parameters once per call, so a sequence's frames move
    together. None when every part is off."""
    from torchvision.transforms import v2

    height, width = step_shape[-2:]
    parts: list[nn.Module] = []
    if settings["crop_scale"] < 1.0:
        parts.append(
            v2.RandomResizedCrop((height, width), scale=(settings["crop_scale"], 1.0), antialias=True)
        )
    if settings["hflip"]:
        parts.append(v2.RandomHorizontalFlip(settings["hflip"]))
    jitter = {k: settings[k] for k in ("brightness", "contrast", "saturation", "hue")}
    if any(jitter.values()):
        parts.append(v2.ColorJitter(**jitter))
    if settings["noise_std"]:
        parts.append(v2.GaussianNoise(sigma=settings["noise_std"], clip=True))
    return v2.Compose(parts) if parts else None
