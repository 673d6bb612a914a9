"""Index maps for one batch of lengths: sorting, packing, reversing within length, true ends.

Everything is computed once per forward call on the CPU with NumPy (lengths live there) and moved
to the device as a few small index tensors; the layers then only run gathers on the device.
Packed layout is torch's: time-major, at step t the rows of the batch_sizes[t] longest sequences.

The padded paths (`padded_maps`) get all their maps from one host-to-device copy of a few [B]
vectors (pinned on CUDA, so the non_blocking copy is truly asynchronous). The [T, B] maps (masks,
reversal) are expanded from them on the device by a handful of elementwise kernels instead of
being built with O(B*T) host work and copied. Nothing reads a device tensor back: no sync.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from torch import Tensor


def check_lengths(lengths: object, batch_size: int, max_steps: int) -> Tensor:
    """Validate lengths for a padded [B, T, F] input; return them as int64 on the CPU."""
    return _checked(lengths, batch_size, max_steps)[0]


# Below this many rows, Python's min/max/sum over a list beat NumPy's reductions (~2 us each).
_LIST_STATS_MAX = 512


def _checked(lengths: object, batch_size: int, max_steps: int) -> tuple[Tensor, np.ndarray, tuple]:
    """check_lengths, plus the NumPy view and (min, max, sum, non-zero count) from the same pass."""
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
    if lengths.dtype != torch.int64:
        lengths = lengths.to(torch.int64)
    if 0 < batch_size <= _LIST_STATS_MAX:
        # Tensor.tolist() dispatches no op; Tensor.numpy() four (detach, to, resolve_conj, resolve_neg)
        xs = lengths.tolist()
        lens = np.array(xs, dtype=np.int64)
        stats = (min(xs), max(xs), sum(xs), batch_size - xs.count(0))
    else:
        lens = lengths.numpy()
        stats = (0, 0, 0, 0)
        if batch_size:
            stats = (int(lens.min()), int(lens.max()), int(lens.sum()), int(np.count_nonzero(lens)))
    if stats[0] < 0 or stats[1] > max_steps:
        raise ValueError(
            f"lengths must lie in 0..{max_steps} (the input's time size), "
            f"got min {stats[0]} and max {stats[1]}"
        )
    return lengths, lens, stats


# One arange per device, sliced for every call instead of launching a kernel each time. Grown
# ones stay referenced: a kernel queued on another stream may still read the old buffer.
_ARANGES: dict[torch.device, list[Tensor]] = {}


def _arange(n: int, device: torch.device) -> Tensor:
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return torch.arange(n, device=device)  # a graph's memory must not outlive it in a cache
    held = _ARANGES.setdefault(device, [])
    if not held or held[-1].numel() < n:
        # made under inference_mode it is an inference tensor: fine, as it is only read, never
        # saved for backward (a test runs training after inference)
        held.append(torch.arange(max(n, 2 * held[-1].numel() if held else 1024), device=device))
    return held[-1][:n]


# One zero buffer per (device, dtype), viewed as the initial state of calls without h0 instead of a
# fill kernel per layer and direction. Only ever read (cuDNN takes hx read-only); made outside
# inference mode, because autograd saves hx for the backward.
_ZEROS: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}


def zeros(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A contiguous all-zero tensor of this shape in like's dtype and device, without a kernel."""
    n = 1
    for d in shape:
        n *= d
    if like.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return like.new_zeros(shape)  # a graph's memory must not outlive it in a cache
    held = _ZEROS.setdefault((like.device, like.dtype), [])
    if not held or held[-1].numel() < n:
        with torch.inference_mode(False):
            held.append(
                torch.zeros(
                    max(n, 2 * held[-1].numel() if held else 4096), dtype=like.dtype, device=like.device
                )
            )
    return held[-1][:n].view(shape)


class PaddedMaps:
    """Device maps of the padded paths, time-major ([max_len, B] flattened as t * B + b).

    All from one host-to-device copy of a few [B] rows (the lengths in the rows' order, the end
    indices, the sort permutations, the reversal's last steps), expanded on the device by a few
    elementwise kernels. cuDNN's RNN calls block the host until the GPU is done, so host work is
    never hidden behind the recurrence: one copy costs less than two, wherever it is queued.
    """

    ONE_COPY = True  # (gru_host tells this version from older ones by it)

    def __init__(self, layout: Layout, sort: bool, reverse: bool):
        self._layout, self._sort, self._reverse = layout, sort, reverse
        max_len, batch = layout.max_len, layout.batch_size
        lens = layout.sorted_lens if sort else layout.lengths_np
        rows = [lens, np.maximum(lens - 1, 0) * batch + np.arange(batch)]
        if sort:
            rows += [layout.lengths_np, layout.inv_perm_np, layout.perm_np]
        if reverse:
            rows.append((lens - 1) * batch + np.arange(batch))
        self._rows = layout._to_device(*rows)
        self._row_lengths = self._rows[0]
        self.perm = self._rows[4] if sort else None  # [B] longest first (only when sorted)
        self._time = _arange(max_len, layout.device).view(max_len, 1)
        # bool, True at real steps, in the rows' order
        self.mask_tm = (self._time < self._row_lengths).view(max_len, batch, 1)

    @property
    def end(self) -> Tensor:
        """[B] flat time-major index of each row's last real step (step 0 when empty)."""
        return self._rows[1]

    @property
    def inv_perm(self) -> Tensor | None:
        return self._rows[3] if self._sort else None

    @cached_property
    def mask_bm(self) -> Tensor:
        """[B, max_len, 1] bool, the same in batch-major order and the input's row order."""
        lens = self._rows[2] if self._sort else self._row_lengths
        return (lens.view(-1, 1) > self._time.view(1, -1)).unsqueeze(-1)

    @cached_property
    def empty(self) -> Tensor | None:
        """[B, 1] bool, rows of length 0 in the rows' order (None when there are none)."""
        if self._layout.n_alive == self._layout.batch_size:
            return None
        return (self._row_lengths == 0).view(-1, 1)

    @cached_property
    def rev(self) -> Tensor | None:
        """[max_len * B] flat time-major index reversing each row within its length (None unless asked)."""
        if not self._reverse:
            return None
        # step t of row b reads step len_b - 1 - t of it; padded steps read themselves
        max_len, batch = self.mask_tm.shape[0], self.mask_tm.shape[1]
        flat = _arange(max_len * batch, self._layout.device).view(max_len, batch)
        last_step = self._rows[-1]
        within = torch.where(self.mask_tm.view(max_len, batch), last_step - self._time * batch, flat)
        return within.view(max_len * batch)


class Layout:
    """The index maps of one batch; device tensors are built lazily and cached."""

    def __init__(
        self, lengths: Tensor, steps: int, device: torch.device, _checked_stats=None, _lengths_np=None
    ):
        """lengths: int64 on the CPU, already checked (use `Layout.checked` for raw input)."""
        self.lengths = lengths
        # Tensor.numpy() dispatches four ops (detach, to, resolve_conj, resolve_neg): reuse _checked's
        self.lengths_np = lengths.numpy() if _lengths_np is None else _lengths_np
        self.batch_size = int(self.lengths_np.shape[0])
        self.steps = steps  # padded time size of the input
        self.device = device
        if _checked_stats is None:
            _checked_stats = _checked(lengths, self.batch_size, steps)[2]
        shortest, self.max_len, self.total, self.n_alive = _checked_stats  # total: real steps in the batch
        self.uniform = self.batch_size > 0 and shortest == self.max_len

    @classmethod
    def checked(cls, lengths: object, batch_size: int, steps: int, device: torch.device) -> Layout:
        """Validate raw lengths (clear ValueErrors) and build the layout, in one pass over them."""
        lengths, lens, stats = _checked(lengths, batch_size, steps)
        return cls(lengths, steps, device, stats, lens)

    def _index_to_device(self, a: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        if self.device.type == "cuda":
            t = t.pin_memory()  # so that the non_blocking copy below is truly asynchronous
        return t.to(self.device, non_blocking=True)

    # ---- sorting (longest first, stable, like pack_padded_sequence(enforce_sorted=False)) ----
    @cached_property
    def perm_np(self) -> np.ndarray:
        return np.argsort(-self.lengths_np, kind="stable")

    @cached_property
    def sorted_lens(self) -> np.ndarray:
        return self.lengths_np[self.perm_np]

    @cached_property
    def sorted_lens_i32(self) -> Tensor:
        t = torch.from_numpy(self.sorted_lens.astype(np.int32))
        return (t.pin_memory() if self.device.type == "cuda" else t).to(self.device, non_blocking=True)

    @cached_property
    def perm(self) -> Tensor:
        return self._index_to_device(self.perm_np)

    @cached_property
    def inv_perm_np(self) -> np.ndarray:
        inv = np.empty_like(self.perm_np)
        inv[self.perm_np] = np.arange(self.batch_size)
        return inv

    @cached_property
    def inv_perm(self) -> Tensor:
        return self._index_to_device(self.inv_perm_np)

    @cached_property
    def is_sorted(self) -> bool:
        return bool(np.all(self.perm_np == np.arange(self.batch_size)))

    # ---- padded layout helpers ----
    @cached_property
    def mask(self) -> Tensor:
        """[B, max_len, 1] bool on the device, True at real steps (original order)."""
        m = np.arange(self.max_len)[None, :] < self.lengths_np[:, None]
        return torch.from_numpy(m[:, :, None]).to(self.device, non_blocking=True)

    def reverse_index(self, lens: np.ndarray, steps: int) -> Tensor:
        """Flat index into [B*steps] that reverses each row within its length (pads map to themselves)."""
        t = np.arange(steps)[None, :]
        within = t < lens[:, None]
        src = np.where(within, lens[:, None] - 1 - t, t)
        return self._index_to_device((src + np.arange(len(lens))[:, None] * steps).ravel())

    def end_index(self, lens: np.ndarray) -> tuple[Tensor, Tensor]:
        """(row, step) indices of each row's last real step (step 0 for empty rows)."""
        return self._index_to_device(np.arange(len(lens))), self._index_to_device(np.maximum(lens - 1, 0))

    def _to_device(self, *rows) -> Tensor:
        """One host-to-device copy of int64 rows (a [B] tensor, or [k, B] from NumPy rows); pinned
        on CUDA, so that the non_blocking copy is truly asynchronous."""
        pin = self.device.type == "cuda"
        if len(rows) == 1 and isinstance(rows[0], Tensor):
            buf = rows[0].pin_memory() if pin else rows[0]
        else:
            buf = torch.empty(len(rows), self.batch_size, dtype=torch.int64, pin_memory=pin)
            host = buf.numpy()
            for i, r in enumerate(rows):  # row by row: np.stack(out=) costs ~20 us more
                host[i] = r
        return buf.to(self.device, non_blocking=True)

    def padded_maps(self, sort: bool, reverse: bool) -> PaddedMaps:
        """Every map the padded paths need, from one small host-to-device copy (PaddedMaps).

        sort: rows in the longest-first order (segments) instead of the input's; mask_bm, the
        output mask, is always in the input's order. reverse: also the within-length reversal.
        """
        return PaddedMaps(self, sort, reverse)

    # ---- packed layout (sorted order) ----
    @cached_property
    def batch_sizes(self) -> list[int]:
        counts = np.bincount(self.sorted_lens, minlength=self.max_len + 1)
        alive = self.batch_size - np.cumsum(counts)[: self.max_len]
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
        return self._index_to_device(self.perm_np[i] * self.steps + t)

    @cached_property
    def packed_reverse(self) -> Tensor:
        """Packed row (t, i) -> packed row (len_i - 1 - t, i); an involution."""
        offsets, t, i = self._packed_rows
        return self._index_to_device(offsets[self.sorted_lens[i] - 1 - t] + i)

    @cached_property
    def packed_prev(self) -> Tensor:
        """For the rows of steps >= 1, the packed row of the same sequence one step earlier."""
        offsets, t, i = self._packed_rows
        b0 = self.batch_sizes[0] if self.batch_sizes else 0
        return self._index_to_device(offsets[t[b0:] - 1] + i[b0:])

    @cached_property
    def packed_end(self) -> Tensor:
        """Packed row of each non-empty sequence's last step, in sorted order."""
        offsets, _, _ = self._packed_rows
        ls = self.sorted_lens[: self.n_alive]
        return self._index_to_device(offsets[ls - 1] + np.arange(self.n_alive))


class DeviceLayout:
    """A padded batch whose lengths are a [B] int64 tensor on the device and whose time size is fixed.

    The CUDA-graph path (``gru_graphs``) runs ``run_padded`` over it: every map is computed on the
    device from the lengths buffer, so a captured graph replays for any new lengths of the same
    (B, steps) after they are copied into that buffer. Nothing here reads a device value.
    """

    def __init__(self, lengths: Tensor, steps: int):
        self.lengths = lengths  # [B] int64 on the device; lengths <= steps
        self.batch_size = int(lengths.shape[0])
        self.max_len = self.steps = steps  # the kernel runs every step; padding is masked

    def padded_maps(self, sort: bool, reverse: bool) -> DeviceMaps:
        if sort:
            raise ValueError("DeviceLayout serves padded_gather only (segments sort by host lengths)")
        return DeviceMaps(self.lengths, self.steps, reverse)


class DeviceMaps:
    """The maps of `PaddedMaps` (rows in input order) from a device lengths buffer, by a few
    elementwise kernels. ``empty`` is always a tensor (whether a row is empty is not known on the
    host); where() with an all-False mask returns the other operand exactly."""

    perm = inv_perm = None

    def __init__(self, lengths: Tensor, steps: int, reverse: bool):
        batch = lengths.shape[0]
        time = _arange(steps, lengths.device).view(steps, 1)
        self.mask_tm = (time < lengths).view(steps, batch, 1)
        # batch-major memory, as PaddedMaps': where() lays its output out like this first operand
        self.mask_bm = (lengths.view(batch, 1) > time.view(1, steps)).unsqueeze(-1)
        row = _arange(batch, lengths.device)
        last = lengths - 1
        self.end = last.clamp(min=0) * batch + row
        self.empty = (lengths == 0).view(batch, 1)
        self.rev = None
        if reverse:
            flat = _arange(steps * batch, lengths.device).view(steps, batch)
            within = torch.where(self.mask_tm.view(steps, batch), (last * batch + row) - time * batch, flat)
            self.rev = within.view(steps * batch)
