"""How `GRU` runs one batch: its execution paths, all built on one layer-by-direction loop.

Each path lays the batch out its own way (time-major padded rows, packed rows, or the batch sorted
longest first), then hands `run_layers` four small functions for that layout: the initial state of
a (layer, direction), one direction's recurrence, the reversal of each sequence within its length,
and the state at each sequence's true end. `run_layers` does what every path shares: the backward
direction reads its input reversed and its outputs are reversed back, the directions are joined,
dropout goes between layers, and the final states and gates are collected.

- `run_padded`: "padded_gather" and "segments", torch's padded kernel per layer and direction
- `run_packed`: torch's packed kernel, which runs all layers in one call (no loop of ours)
- `run_packed_loop`: "scan" and cho2014's step loop, the hand-written loops over packed rows, and
  "persistent", the same rows through one persistent kernel per layer and direction
- `run_cho2014_triton`: cho2014's fused Triton kernel on CUDA
- `run_empty`: a batch without a single real step

``gru.py``'s docstring says when each is taken. Every path returns (outputs [B, T, D*H] with zeros
at padding, h_n [L*D, B, H]) and, where it takes ``want_gates``, a gates dict or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gru_mm.nn import cho2014_triton, gru_persistent
from gru_mm.nn.cho2014 import ChoScan, cho2014_packed, to_internal
from gru_mm.nn.gru_kernels import gru_packed_kernel, gru_padded_kernel
from gru_mm.nn.gru_layout import Layout, zeros
from gru_mm.nn.gru_scan import TorchScan, torch_gates_packed, torch_scan_packed

Spans = list[tuple[int, int, int]]  # gru_plan's segments: (first step, end step, rows alive)


@dataclass(slots=True)
class Stack:
    """What the paths read of the layer: sizes, mode, and its weights per (layer, direction).

    Made for each call (cheap: the weights are looked up by name only when a path reads them), so
    it never holds stale parameters: those of a replica, or ones replaced since the last call.
    """

    parameters: dict[str, Tensor]  # the layer's own parameter dict
    weight_names: list[list[str]]  # per group = layer * num_directions + direction; nn.GRU's order
    cell: str
    hidden_size: int
    num_layers: int
    num_directions: int
    has_biases: bool
    dropout: float  # between layers, when training
    training: bool

    def weights(self, group: int) -> list[Tensor]:
        return [self.parameters[name] for name in self.weight_names[group]]

    def all_weights(self) -> list[Tensor]:
        """Every group's weights in a row: nn.GRU's parameter order."""
        return [self.parameters[name] for names in self.weight_names for name in names]

    def initial_states(self, h0: Tensor | None, like: Tensor, batch: int) -> Tensor:
        """h0, or zeros [L*D, batch, H] in like's dtype and device."""
        if h0 is not None:
            return h0
        return like.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)


def run_layers(
    stack: Stack,
    inputs: Tensor,
    initial_state: Callable[[int], Tensor],
    run_direction: Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor | None]],
    reverse: Callable[[Tensor], Tensor],
    last_state: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The layer-by-direction loop of every path that runs one direction at a time.

    initial_state(group) -> state; run_direction(rows, state, group) -> (outputs, gates or None);
    reverse(rows) flips each sequence within its length; last_state(outputs, state) -> the state at
    each sequence's end. group = layer * num_directions + direction, the index into h0 and weights.
    Returns (the last layer's outputs, each group's final state, each group's gates: [] unless
    run_direction returns them), outputs and gates in input time order.
    """
    layer_input, finals, gates = inputs, [], []
    for layer in range(stack.num_layers):
        outputs = []
        for direction in range(stack.num_directions):
            group = layer * stack.num_directions + direction
            state = initial_state(group)
            rows = layer_input if direction == 0 else reverse(layer_input)
            out, gate = run_direction(rows, state, group)
            finals.append(last_state(out, state))
            if direction == 1:  # back to input time order
                out = reverse(out)
                gate = None if gate is None else reverse(gate)
            outputs.append(out)
            if gate is not None:
                gates.append(gate)
        # one direction (the common case): no concatenation kernel
        layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
        if stack.dropout and stack.training and layer < stack.num_layers - 1:
            layer_input = F.dropout(layer_input, stack.dropout, training=True)
    return layer_input, finals, gates


def run_padded(
    stack: Stack, x: Tensor, layout: Layout, h0: Tensor | None, spans: Spans | None
) -> tuple[Tensor, Tensor]:
    """padded_gather (spans None) and segments: time-major inside, one map copy, no sync.

    Every map comes from one host-to-device copy (``Layout.padded_maps``); the kernels run
    time-major ([T, B, *], cuDNN's own layout, so it copies nothing), final states are one
    index_select at the true ends (its backward is one index_add), and the within-length
    reversal of the backward direction is one index_select on contiguous rows.
    """
    batch, max_len, hidden = layout.batch_size, layout.max_len, stack.hidden_size
    maps = layout.padded_maps(sort=spans is not None, reverse=stack.num_directions == 2)
    x_tm = (x if max_len == layout.steps else x[:, :max_len]).transpose(0, 1)
    if spans is not None:
        x_tm = x_tm.index_select(1, maps.perm)
        h0 = None if h0 is None else h0.index_select(1, maps.perm)
    # Zero the padding: finite garbage there would be harmless, but inf/NaN would reach the
    # gradients of real steps through the padded steps' (zero-weighted) backward. With the
    # time-major mask first, where() writes time-major memory, so contiguous() is a no-op.
    x_tm = torch.where(maps.mask_tm, x_tm, 0).contiguous()
    train = torch.is_grad_enabled()  # cuDNN keeps its backward workspace only in train mode

    def initial_state(group: int) -> Tensor:  # [1, B, H]
        return h0[group : group + 1] if h0 is not None else zeros((1, batch, hidden), x_tm)

    def reverse(rows: Tensor) -> Tensor:
        return rows.reshape(max_len * batch, -1).index_select(0, maps.rev).view(max_len, batch, -1)

    def run_direction(rows: Tensor, state: Tensor, group: int) -> tuple[Tensor, None]:
        weights = stack.weights(group)
        if spans is None:
            # cuDNN refuses a non-contiguous hx ("rnn: hx is not contiguous"); the CPU kernel does not care
            out = gru_padded_kernel(
                rows, state.contiguous(), weights, has_biases=stack.has_biases, train=train
            )
            return out, None
        return _run_segments(rows, state, weights, stack, spans, train), None

    def last_state(out: Tensor, state: Tensor) -> Tensor:
        last = out.reshape(max_len * batch, hidden).index_select(0, maps.end)
        return last if maps.empty is None else torch.where(maps.empty, state[0], last)

    out, finals, _ = run_layers(stack, x_tm, initial_state, run_direction, reverse, last_state)
    # one layer and direction (the common case): a view, not a copy kernel
    h_n = finals[0].unsqueeze(0) if len(finals) == 1 else torch.stack(finals)
    if spans is not None:
        out = out.index_select(1, maps.inv_perm)
        h_n = h_n.index_select(1, maps.inv_perm)
    # back to batch-major while zeroing the padding (mask first: its layout is the output's)
    out = torch.where(maps.mask_bm, out.transpose(0, 1), 0)
    if max_len < layout.steps:
        out = F.pad(out, (0, 0, 0, layout.steps - max_len))
    return out, h_n


def _run_segments(
    rows: Tensor, state: Tensor, weights: list[Tensor], stack: Stack, spans: Spans, train: bool
) -> Tensor:
    """One layer and direction as a few padded calls over the rows still alive (rows sorted longest
    first, time-major [T, B, *]); returns [T, B, H], garbage past each row's end."""
    steps, batch = rows.shape[0], rows.shape[1]
    pieces = []
    for start, stop, alive in spans:
        out = gru_padded_kernel(
            rows[start:stop, :alive],
            state[:, :alive].contiguous(),
            weights,
            has_biases=stack.has_biases,
            train=train,
        )
        state = out[-1:]  # the rows alive in the next span are a prefix of these
        pieces.append(F.pad(out, (0, 0, 0, batch - alive)) if alive < batch else out)
    if spans[-1][1] < steps:
        pieces.append(rows.new_zeros(steps - spans[-1][1], batch, stack.hidden_size))
    return torch.cat(pieces, 0)


def run_packed(stack: Stack, x: Tensor, layout: Layout, h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """torch's packed kernel on the non-empty rows (pack_padded_sequence rejects length 0)."""
    alive, batch, steps = layout.n_alive, layout.batch_size, layout.steps
    width = stack.num_directions * stack.hidden_size
    data = x.reshape(batch * steps, -1).index_select(0, layout.pack_index)
    h0_sorted = stack.initial_states(h0, x, batch).index_select(1, layout.perm)
    out, h_n = gru_packed_kernel(
        data,
        torch.tensor(layout.batch_sizes, dtype=torch.int64),
        h0_sorted[:, :alive].contiguous(),
        stack.all_weights(),
        has_biases=stack.has_biases,
        num_layers=stack.num_layers,
        dropout=stack.dropout if stack.training else 0.0,
        train=stack.training or torch.is_grad_enabled(),
        bidirectional=stack.num_directions == 2,
    )
    out = out.new_zeros(batch * steps, width).index_copy(0, layout.pack_index, out).view(batch, steps, width)
    if alive < batch:
        h_n = torch.cat([h_n, h0_sorted[:, alive:]], 1)
    return out, h_n.index_select(1, layout.inv_perm)


def run_packed_loop(
    stack: Stack, x: Tensor, layout: Layout, h0: Tensor | None, want_gates: bool, persistent: bool = False
) -> tuple[Tensor, Tensor, dict | None]:
    """scan (torch's cell) and cho2014's step loop: packed rows from start to end, no padded detour.
    persistent: each direction's recurrence runs as one persistent kernel (``gru_persistent``)."""
    alive, batch, steps = layout.n_alive, layout.batch_size, layout.steps
    data = x.reshape(batch * steps, -1).index_select(0, layout.pack_index)
    h0_sorted = stack.initial_states(h0, x, batch).index_select(1, layout.perm)
    batch_sizes, prev_row = layout.batch_sizes, layout.packed_prev

    def initial_state(group: int) -> Tensor:  # [alive, H]
        return h0_sorted[group, :alive]

    def reverse(rows: Tensor) -> Tensor:
        return rows.index_select(0, layout.packed_reverse)

    def run_direction(rows: Tensor, state: Tensor, group: int) -> tuple[Tensor, Tensor | None]:
        w = stack.weights(group)
        if stack.cell == "cho2014":
            bias = w[2] if stack.has_biases else None
            steps = gru_persistent.cho_recurrence if persistent else ChoScan.apply
            out, gates = cho2014_packed(rows, state, w[0], w[1], bias, batch_sizes, prev_row, steps)
            return out, gates if want_gates else None
        b_ih, b_hh = (w[2], w[3]) if stack.has_biases else (None, None)
        steps = gru_persistent.torch_recurrence if persistent else TorchScan.apply
        out = torch_scan_packed(rows, state, w[0], w[1], b_ih, b_hh, batch_sizes, prev_row, steps)
        if not want_gates:
            return out, None
        return out, torch_gates_packed(rows, state, out, w[0], w[1], b_ih, b_hh, batch_sizes[0], prev_row)

    def last_state(out: Tensor, state: Tensor) -> Tensor:
        return out.index_select(0, layout.packed_end)

    out, finals, gates = run_layers(stack, data, initial_state, run_direction, reverse, last_state)
    out = out.new_zeros(batch * steps, out.shape[1]).index_copy(0, layout.pack_index, out)
    out = out.view(batch, steps, -1)
    h_n = torch.stack(finals)
    if alive < batch:
        h_n = torch.cat([h_n, h0_sorted[:, alive:]], 1)
    h_n = h_n.index_select(1, layout.inv_perm)
    if not want_gates:
        return out, h_n, None
    every = torch.cat(gates, 1)  # [N, L*D*2H]
    padded = every.new_zeros(batch * steps, every.shape[1]).index_copy(0, layout.pack_index, every)
    padded = padded.view(batch, steps, len(gates), 2, stack.hidden_size).permute(3, 2, 0, 1, 4)
    return out, h_n, {"z": padded[0].contiguous(), "r": padded[1].contiguous()}


def run_cho2014_triton(
    stack: Stack, x: Tensor, layout: Layout, h0: Tensor | None, want_gates: bool
) -> tuple[Tensor, Tensor, dict | None]:
    """cho2014 on CUDA: the fused kernel over the batch sorted longest first (padded layout)."""
    batch, max_len, steps, hidden = layout.batch_size, layout.max_len, layout.steps, stack.hidden_size
    x_sorted = torch.where(layout.mask, x[:, :max_len], 0).index_select(0, layout.perm)
    h0_sorted = stack.initial_states(h0, x, batch).index_select(1, layout.perm)
    sorted_lens = layout.sorted_lens
    end_row, end_step = layout.end_index(sorted_lens)
    empty = None
    if layout.n_alive < batch:
        empty = torch.from_numpy(sorted_lens == 0).to(x.device, non_blocking=True).unsqueeze(1)
    flip = layout.reverse_index(sorted_lens, max_len) if stack.num_directions == 2 else None

    def initial_state(group: int) -> Tensor:  # [B, H]
        return h0_sorted[group]

    def reverse(rows: Tensor) -> Tensor:
        return rows.reshape(batch * max_len, -1).index_select(0, flip).view(batch, max_len, -1)

    def run_direction(rows: Tensor, state: Tensor, group: int) -> tuple[Tensor, Tensor | None]:
        w = stack.weights(group)
        bias = to_internal(w[2], hidden) if stack.has_biases else None
        projected = F.linear(rows.transpose(0, 1), to_internal(w[0], hidden), bias)  # [max_len, B, 3H]
        out, gates = cho2014_triton.ChoTriton.apply(
            projected, state, to_internal(w[1], hidden), layout.sorted_lens_i32
        )
        return out.transpose(0, 1), gates.transpose(0, 1) if want_gates else None

    def last_state(out: Tensor, state: Tensor) -> Tensor:
        last = out[end_row, end_step]
        return last if empty is None else torch.where(empty, state, last)

    out, finals, gates = run_layers(stack, x_sorted, initial_state, run_direction, reverse, last_state)
    out = torch.where(layout.mask, out.index_select(0, layout.inv_perm), 0)
    if max_len < steps:
        out = F.pad(out, (0, 0, 0, steps - max_len))
    h_n = torch.stack(finals).index_select(1, layout.inv_perm)
    if not want_gates:
        return out, h_n, None
    every = torch.where(layout.mask, torch.stack(gates, 2).index_select(0, layout.inv_perm).flatten(2), 0)
    every = F.pad(every, (0, 0, 0, steps - max_len)).view(batch, steps, len(gates), 2, hidden)
    every = every.permute(3, 2, 0, 1, 4)
    return out, h_n, {"z": every[0].contiguous(), "r": every[1].contiguous()}


def run_empty(
    stack: Stack, x: Tensor, layout: Layout, h0: Tensor | None, want_gates: bool
) -> tuple[Tensor, Tensor, dict | None]:
    """No real step in the batch: zeros out, h0 (or zeros) as the final state."""
    batch, steps = layout.batch_size, layout.steps
    gates = None
    if want_gates:
        z = x.new_zeros(stack.num_layers * stack.num_directions, batch, steps, stack.hidden_size)
        gates = {"z": z, "r": z.clone()}
    # tie to the weights and the input with zero gradient, so DDP and loss.backward() see them
    # (and an encoder before this layer) used; where() keeps NaN padding out of it
    tie = 0.0 * sum(w.reshape(-1)[0] for w in stack.all_weights())
    if x.numel():
        nothing = torch.zeros(1, dtype=torch.bool, device=x.device)
        tie = tie + torch.where(nothing, x.reshape(-1)[:1], 0).sum()
    out = x.new_zeros(batch, steps, stack.num_directions * stack.hidden_size) + tie
    return out, stack.initial_states(h0, x, batch) + tie, gates
