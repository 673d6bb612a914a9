"""One host-to-device copy per batch: a batch's tensors as views into one flat byte buffer.

Moving a batch tensor by tensor costs a copy call (and, from pageable memory, a staging copy) per tensor;
packed, the whole batch moves in one copy of the buffer, pinned by the DataLoader and non-blocking, and
the tensors on the device are views of the moved buffer at the same offsets (no kernels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

ALIGN = 128  # bytes: every tensor starts on a boundary that vectorised CUDA kernels read whole


def pack(tensors: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Copy `tensors` (on the CPU) into one new uint8 buffer; return it and their views of it."""
    offsets, total = [], 0
    for t in tensors:
        total = -(-total // ALIGN) * ALIGN
        offsets.append(total)
        total += t.numel() * t.element_size()
    flat = torch.empty(total, dtype=torch.uint8)
    views = [_view(flat, offset, t.dtype, t.shape) for offset, t in zip(offsets, tensors, strict=True)]
    for view, t in zip(views, tensors, strict=True):
        view.copy_(t)
    return flat, views


def is_packed(flat: Tensor, tensors: Sequence[Tensor]) -> bool:
    """Whether every tensor is still a contiguous view of `flat` (none was replaced since `pack`)."""
    ptr = flat.untyped_storage().data_ptr()
    return all(t.untyped_storage().data_ptr() == ptr and t.is_contiguous() for t in tensors)


def rebase(tensors: Sequence[Tensor], moved: Tensor) -> list[Tensor]:
    """The views of `moved` (a moved or pinned copy of the buffer that `tensors` view) that they are of
    theirs: same byte offsets, dtypes and shapes."""
    return [_view(moved, t.storage_offset() * t.element_size(), t.dtype, t.shape) for t in tensors]


def _view(flat: Tensor, offset: int, dtype: torch.dtype, shape: torch.Size) -> Tensor:
    nbytes = math.prod(shape) * dtype.itemsize
    return flat[offset : offset + nbytes].view(dtype).view(shape)
