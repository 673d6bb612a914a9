"""Index maps for one batch of lengths: sorting, packing, reversing within length, true ends.

Everything is computed once per forward call on the CPU with NumPy (lengths live there) and moved
to the device as a few small index tensors; the layers then only run gathers on the device.
Packed layout is torch's: time-major, at step t the rows of the batch_sizes[t] longest sequences.

The padded paths (`padded_maps`) get all their maps from one host-to-device copy of a few [B]
vectors (pinned on CUDA, so the non_blocking copy is truly asynchronous); the [T, B] maps (masks,
reversal) are expanded from them on the device by a handful of elementwise kernels instead of
being built with O(B*T) host work and copied. Nothing reads a device tensor back: no sync.
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


def check_lengths(lengths: object, batch_size: int, max_steps: int) -> Tensor:
    """Validate lengths for a padded [B, T, F] input; return them as int64 on the CPU."""
    if lengths is None:
        raise ValueError("GRU.forward needs `lengths` ([B] int64 on the CPU) for a padded input")
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(np.asarray(lengths))
        except (TypeError, ValueError) as e:
            raise ValueError(f"lengths must be a 1-D integer tensor, got {type(lengths).__name__}") from e
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(f"lengths must hold integers (int64), got dtype {lengths.dtype}")
    if lengths.device.type != "cpu":
        raise ValueError(
            f"lengths must be on the CPU, got {lengths.device}: keep them there (moving them costs a sync)"
        )
    if lengths.dim() != 1 or lengths.numel() != batch_size:
        raise ValueError(
            f"lengths has shape {tuple(lengths.shape)} but the input's batch size is {batch_size}"
        )
    lengths = lengths.to(torch.int64)
    if batch_size:
        lens = lengths.numpy()  # NumPy reductions cost a fraction of torch's on tiny CPU tensors
        lo, hi = int(lens.min()), int(lens.max())
        if lo < 0 or hi > max_steps:
            raise ValueError(
                f"lengths must lie in 0..{max_steps} (the input's time size), got min {lo} and max {hi}"
            )
    return lengths


class PaddedMaps(NamedTuple):
    """Device maps of the padded paths, time-major ([Tm, B] flattened as t * B + b)."""

    mask_tm: Tensor  # [Tm, B, 1] bool, True at real steps (in the rows' order, see `sort`)
    mask_bm: Tensor  # [B, Tm, 1] bool, the same in batch-major order and the input's row order
    end: Tensor  # [B] flat time-major index of each row's last real step (step 0 when empty)
    empty: Tensor | None  # [B, 1] bool, rows of length 0 (None when there are none)
    rev: Tensor | None  # [Tm * B] flat time-major index reversing each row within its length
    perm: Tensor | None  # [B] longest first (only when sorted)
    inv_perm: Tensor | None


class Layout:
    """The index maps of one batch; device tensors are built lazily and cached."""

    def __init__(self, lengths: Tensor, steps: int, device: torch.device):
        self.lengths = lengths
        self.lens = lengths.numpy()
        self.B = int(self.lens.shape[0])
        self.T = steps  # padded time size of the input
        self.device = device
        lens = self.lens
        self.max_len = int(lens.max()) if self.B else 0
        self.total = int(lens.sum()) if self.B else 0  # real steps in the batch
        self.n_alive = int(np.count_nonzero(lens))
        self.uniform = self.B > 0 and int(lens.min()) == self.max_len

    def _dev(self, a: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        if self.device.type == "cuda":
            t = t.pin_memory()  # so that the non_blocking copy below is truly asynchronous
        return t.to(self.device, non_blocking=True)

    # ---- sorting (longest first, stable, like pack_padded_sequence(enforce_sorted=False)) ----
    @cached_property
    def perm_np(self) -> np.ndarray:
        return np.argsort(-self.lens, kind="stable")

    @cached_property
    def sorted_lens(self) -> np.ndarray:
        return self.lens[self.perm_np]

    @cached_property
    def sorted_lens_i32(self) -> Tensor:
        t = torch.from_numpy(self.sorted_lens.astype(np.int32))
        return (t.pin_memory() if self.device.type == "cuda" else t).to(self.device, non_blocking=True)

    @cached_property
    def perm(self) -> Tensor:
        return self._dev(self.perm_np)

    @cached_property
    def inv_perm_np(self) -> np.ndarray:
        inv = np.empty_like(self.perm_np)
        inv[self.perm_np] = np.arange(self.B)
        return inv

    @cached_property
    def inv_perm(self) -> Tensor:
        return self._dev(self.inv_perm_np)

    @cached_property
    def is_sorted(self) -> bool:
        return bool(np.all(self.perm_np == np.arange(self.B)))

    # ---- padded layout helpers ----
    @cached_property
    def mask(self) -> Tensor:
        """[B, max_len, 1] bool on the device, True at real steps (original order)."""
        m = np.arange(self.max_len)[None, :] < self.lens[:, None]
        return torch.from_numpy(m[:, :, None]).to(self.device, non_blocking=True)

    def reverse_index(self, lens: np.ndarray, steps: int) -> Tensor:
        """Flat index into [B*steps] that reverses each row within its length (pads map to themselves)."""
        t = np.arange(steps)[None, :]
        within = t < lens[:, None]
        src = np.where(within, lens[:, None] - 1 - t, t)
        return self._dev((src + np.arange(len(lens))[:, None] * steps).ravel())

    def end_index(self, lens: np.ndarray) -> tuple[Tensor, Tensor]:
        """(row, step) indices of each row's last real step (step 0 for empty rows)."""
        return self._dev(np.arange(len(lens))), self._dev(np.maximum(lens - 1, 0))

    def padded_maps_host(self, sort: bool, reverse: bool) -> Tensor:
        """The host half of `padded_maps`: [k, B] int64 rows in one (pinned on CUDA) buffer."""
        B = self.B
        lens = self.sorted_lens if sort else self.lens
        rows = [np.maximum(lens - 1, 0) * B + np.arange(B), lens]  # end, lens
        if sort:
            rows += [self.lens, self.perm_np, self.inv_perm_np]
        if reverse:
            rows.append(lens * B - B + np.arange(B))  # flat index of each row's last step
        buf = torch.empty(len(rows), B, dtype=torch.int64, pin_memory=self.device.type == "cuda")
        np.stack(rows, out=buf.numpy())
        return buf

    def padded_maps(self, sort: bool, reverse: bool) -> PaddedMaps:
        """Every map the padded paths need, from one host-to-device copy (see the module docstring).

        sort: rows in the longest-first order (segments) instead of the input's; mask_bm, the
        output mask, is always in the input's order. reverse: also the within-length reversal.
        """
        B, Tm = self.B, self.max_len
        d = self.padded_maps_host(sort, reverse).to(self.device, non_blocking=True)
        end, lens_d = d[0], d[1]
        t = torch.arange(Tm, device=self.device).view(Tm, 1)
        mask_tm = t < lens_d  # [Tm, B]
        mask_bm = (d[2] if sort else lens_d).view(B, 1) > t.view(Tm)  # [B, Tm]
        rev = None
        if reverse:
            # step t of row b reads step len_b - 1 - t of it; padded steps read themselves
            flat = torch.arange(Tm * B, device=self.device).view(Tm, B)
            rev = torch.where(mask_tm, d[-1] - t * B, flat).view(Tm * B)
        return PaddedMaps(
            mask_tm=mask_tm.view(Tm, B, 1),
            mask_bm=mask_bm.view(B, Tm, 1),
            end=end,
            empty=(lens_d == 0).view(B, 1) if self.n_alive < B else None,
            rev=rev,
            perm=d[3] if sort else None,
            inv_perm=d[4] if sort else None,
        )

    # ---- packed layout (sorted order) ----
    @cached_property
    def batch_sizes(self) -> list[int]:
        counts = np.bincount(self.sorted_lens, minlength=self.max_len + 1)
        alive = self.B - np.cumsum(counts)[: self.max_len]
        return [int(n) for n in alive]

    @cached_property
    def _packed_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bs = np.asarray(self.batch_sizes, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(bs)[:-1]]).astype(np.int64)
        t_of_row = np.repeat(np.arange(self.max_len), bs)
        i_of_row = np.arange(int(bs.sum())) - np.repeat(offsets, bs)
        return offsets, t_of_row, i_of_row

    @cached_property
    def pack_index(self) -> Tensor:
        """Packed row -> flat index into the original (unsorted) [B*T] padded layout."""
        _, t, i = self._packed_rows
        return self._dev(self.perm_np[i] * self.T + t)

    @cached_property
    def packed_reverse(self) -> Tensor:
        """Packed row (t, i) -> packed row (len_i - 1 - t, i); an involution."""
        offsets, t, i = self._packed_rows
        return self._dev(offsets[self.sorted_lens[i] - 1 - t] + i)

    @cached_property
    def packed_prev(self) -> Tensor:
        """For the rows of steps >= 1, the packed row of the same sequence one step earlier."""
        offsets, t, i = self._packed_rows
        b0 = self.batch_sizes[0] if self.batch_sizes else 0
        return self._dev(offsets[t[b0:] - 1] + i[b0:])

    @cached_property
    def packed_end(self) -> Tensor:
        """Packed row of each non-empty sequence's last step, in sorted order."""
        offsets, _, _ = self._packed_rows
        ls = self.sorted_lens[: self.n_alive]
        return self._dev(offsets[ls - 1] + np.arange(self.n_alive))
