"""The one batch type every modality shares: padded data, true lengths, presence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gru_mm.data.transfer import is_packed, pack, rebase


@dataclass
class Sample:
    """One example as a source yields it: an array (or None when absent) per modality."""

    id: str
    target: Any
    modalities: dict[str, np.ndarray | Tensor | None]
    # Optional per-modality step times in seconds, shape [T] (for event-style fusion).
    timestamps: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Seq:
    """A padded batch of variable-length sequences of one modality.

    data:    [B, T, *F] float, zeros at padded steps.
    lengths: [B] int64 on the CPU (packing and gathering need them there).
    present: [B] bool; False where the sample lacks this modality (its length is 0).
    times:   optional [B, T] float step times (seconds), zeros at padding.
    """

    data: Tensor
    lengths: Tensor
    present: Tensor
    times: Tensor | None = None

    def __post_init__(self) -> None:
        if self.lengths.dtype != torch.int64 or self.lengths.device.type != "cpu":
            raise ValueError("Seq.lengths must be an int64 tensor on the CPU")

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    @property
    def max_len(self) -> int:
        return self.data.shape[1]

    def mask(self) -> Tensor:
        """[B, T] bool on the data's device: True at real steps."""
        steps = torch.arange(self.max_len)
        return (steps[None, :] < self.lengths[:, None]).to(self.data.device)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Seq:
        # lengths stay on the CPU on purpose: moving them costs a sync per batch.
        return Seq(
            self.data.to(device, non_blocking=non_blocking),
            self.lengths,
            self.present.to(device, non_blocking=non_blocking),
            None if self.times is None else self.times.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Seq:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return Seq(
            self.data.pin_memory(),
            self.lengths,
            self.present.pin_memory(),
            None if self.times is None else self.times.pin_memory(),
        )

    def with_data(self, data: Tensor, lengths: Tensor | None = None) -> Seq:
        """Same batch, new per-step data (an encoder's output); lengths may change (strided conv)."""
        return Seq(data, self.lengths if lengths is None else lengths, self.present, self.times)


@dataclass
class Batch:
    ids: list[str]
    target: Tensor
    inputs: dict[str, Seq]
    # `packed()`: the one buffer that target, data, present and times are views of (lengths stay apart, on
    # the CPU), so that pinning and moving the batch is one copy each
    flat: Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        if self.flat is not None and is_packed(self.flat, tensors := self._tensors()):
            moved = self.flat.to(device, non_blocking=non_blocking)
            return self._with_tensors(rebase(tensors, moved), moved)
        return Batch(
            self.ids,
            self.target.to(device, non_blocking=non_blocking),
            {m: s.to(device, non_blocking=non_blocking) for m, s in self.inputs.items()},
        )

    def pin_memory(self) -> Batch:
        # DataLoader(pin_memory=True) calls this in its pinning thread
        if self.flat is not None and is_packed(self.flat, tensors := self._tensors()):
            pinned = self.flat.pin_memory()
            return self._with_tensors(rebase(tensors, pinned), pinned)
        return Batch(self.ids, self.target.pin_memory(), {m: s.pin_memory() for m, s in self.inputs.items()})

    def packed(self) -> Batch:
        """The same batch with its device-bound tensors in one buffer (a copy of them, on the CPU)."""
        flat, views = pack(self._tensors())
        return self._with_tensors(views, flat)

    def _tensors(self) -> list[Tensor]:
        """What moves to the device, in a fixed order: target, then each modality's data, present, times."""
        out = [self.target]
        for s in self.inputs.values():
            out += [s.data, s.present] + ([] if s.times is None else [s.times])
        return out

    def _with_tensors(self, tensors: list[Tensor], flat: Tensor | None) -> Batch:
        it = iter(tensors)
        target = next(it)
        inputs = {
            m: Seq(next(it), s.lengths, next(it), None if s.times is None else next(it))
            for m, s in self.inputs.items()
        }
        return Batch(self.ids, target, inputs, flat)

    def padding_stats(self) -> tuple[int, int]:
        """(padded steps, real steps) summed over modalities."""
        padded = sum(s.batch_size * s.max_len for s in self.inputs.values())
        real = sum(int(s.lengths.sum()) for s in self.inputs.values())
        return padded, real


def pad_sequences(
    arrays: list[np.ndarray | Tensor | None], feature_shape: tuple[int, ...] | None = None
) -> Seq:
    """Stack variable-length arrays [T_i, *F] into a Seq; None means absent (length 0)."""
    tensors = [None if a is None else torch.as_tensor(a) for a in arrays]
    real = [t for t in tensors if t is not None]
    if feature_shape is None:
        if not real:
            raise ValueError("pad_sequences needs feature_shape when every sample lacks the modality")
        feature_shape = tuple(real[0].shape[1:])
    dtype = real[0].dtype if real else torch.float32
    lengths = torch.tensor([0 if t is None else t.shape[0] for t in tensors], dtype=torch.int64)
    max_len = int(lengths.max()) if len(lengths) else 0
    data = torch.zeros((len(tensors), max_len, *feature_shape), dtype=dtype)
    for i, t in enumerate(tensors):
        if t is not None and t.shape[0] > 0:
            data[i, : t.shape[0]] = t
    present = torch.tensor([t is not None and t.shape[0] > 0 for t in tensors], dtype=torch.bool)
    return Seq(data, lengths, present)
