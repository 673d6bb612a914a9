"""Masks of the real steps of a padded batch, built where the lengths live (the CPU, usually: no
device sync) and then moved in one copy."""

from __future__ import annotations

import torch
from torch import Tensor


def step_mask(lengths: Tensor, T: int, device: torch.device) -> Tensor:  # noqa: N803 (T is time)
    """[B, T] bool on `device`: True at real steps."""
    return (torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]).to(device)


def step_weights(lengths: Tensor, T: int, device: torch.device) -> Tensor:  # noqa: N803 (T is time)
    """[B, T, 1] float32 on `device`: 1 at real steps, 0 at padding (to multiply features by)."""
    return step_mask(lengths, T, lengths.device).to(device=device, dtype=torch.float32)[..., None]
