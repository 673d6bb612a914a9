"""torch/cuDNN's GRU equations over packed rows with a hand-written backward (the CPU "scan" path).

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

Why hand-write what ATen has: on the CPU, ATen's GRU records ~10 autograd nodes per step and
replays them one at a time in backward, which costs more than the arithmetic at hidden <= 512.
Here the forward is 6 ops per step on the rows still alive (no work on padding); in the backward
every gate gradient is the carried gradient times a per-row factor computed for all steps up front,
so a step is 5 ops, and the recurrent weight gradient is one matmul after the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def torch_row_factors(
    h0: Tensor, y: Tensor, rz: Tensor, cand: Tensor, g_n: Tensor, prev_index: Tensor, first_rows: int
) -> tuple[Tensor, Tensor, Tensor]:
    """What the torch cell's backward needs of every packed row before the loop: (the previous states
    [N, H]; ka, kg [N, 3, H], per-row factors that times the carried gradient give the gradients wrt
    the input projections and wrt W_h h + b_h). g_n: W_hn h + b_hn of each row."""
    hidden = y.shape[1]
    prev_states = torch.cat([h0[:first_rows], y.index_select(0, prev_index)])
    r, z = rz[:, :hidden], rz[:, hidden:]
    k_n = (1 - z) * (1 - cand * cand)  # d pre_n / d h'
    ka = torch.empty(y.shape[0], 3, hidden, dtype=y.dtype, device=y.device)
    torch.mul(k_n * g_n, r * (1 - r), out=ka[:, 0])
    torch.mul((prev_states - cand) * z, 1 - z, out=ka[:, 1])
    ka[:, 2] = k_n
    kg = ka.clone()
    kg[:, 2] *= r
    return prev_states, ka, kg


class TorchScan(torch.autograd.Function):
    """pre: [N, 3H] input projections incl. b_ih (gate order r, z, n); h0: [batch_sizes[0], H];
    u: [3H, H] recurrent kernel; b_hh: [3H]. Returns y [N, H]."""

    @staticmethod
    def forward(
        ctx, pre: Tensor, h0: Tensor, u: Tensor, b_hh: Tensor, batch_sizes: list[int], prev_index: Tensor
    ):
        n_rows, gate_width = pre.shape
        hidden = gate_width // 3
        u_t = u.t()
        y = pre.new_empty(n_rows, hidden)
        g = pre.new_empty(n_rows, gate_width)  # W_h h + b_h per row (its n part is needed backward)
        rz = pre.new_empty(n_rows, 2 * hidden)
        cand = pre.new_empty(n_rows, hidden)
        h = h0
        off = 0
        for n in batch_sizes:
            end = off + n
            h_prev = h[:n]
            gs = torch.addmm(b_hh, h_prev, u_t, out=g[off:end])
            s = torch.add(pre[off:end, : 2 * hidden], gs[:, : 2 * hidden], out=rz[off:end])
            s.sigmoid_()
            c = torch.addcmul(
                pre[off:end, 2 * hidden :], s[:, :hidden], gs[:, 2 * hidden :], out=cand[off:end]
            )
            c.tanh_()
            h = torch.lerp(c, h_prev, s[:, hidden:], out=y[off:end])
            off = end
        ctx.batch_sizes = batch_sizes
        ctx.save_for_backward(h0, u, y, g, rz, cand, prev_index)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        h0, u, y, g, rz, cand, prev_index = ctx.saved_tensors
        batch_sizes = ctx.batch_sizes
        n_rows, hidden = y.shape
        first_rows = batch_sizes[0]
        dy = dy.contiguous()
        prev_states, ka, kg = torch_row_factors(h0, y, rz, cand, g[:, 2 * hidden :], prev_index, first_rows)
        z = rz[:, hidden:]
        dpre = torch.empty(n_rows, 3, hidden, dtype=y.dtype, device=y.device)
        dg = torch.empty(n_rows, 3 * hidden, dtype=y.dtype, device=y.device)
        carry = y.new_zeros(first_rows, hidden)
        dh = y.new_empty(first_rows, hidden)
        tmp = y.new_empty(first_rows, hidden)
        end = n_rows
        for n in reversed(batch_sizes):
            off = end - n
            d = torch.add(dy[off:end], carry[:n], out=dh[:n])
            d3 = d.unsqueeze(1)
            torch.mul(d3, ka[off:end], out=dpre[off:end])
            torch.mul(d3, kg[off:end], out=dg[off:end].view(n, 3, hidden))
            t = torch.mul(d, z[off:end], out=tmp[:n])
            torch.addmm(t, dg[off:end], u, out=carry[:n])
            end = off
        du = dg.t() @ prev_states
        return dpre.view(n_rows, 3 * hidden), carry, du, dg.sum(0), None, None


def torch_scan_packed(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    batch_sizes: list[int],
    prev_index: Tensor,
    recurrence: Callable[..., Tensor] = TorchScan.apply,
) -> Tensor:
    """One layer, one direction of torch's GRU on packed rows x [N, F]; returns y [N, H].
    recurrence: what runs the steps, called as TorchScan.apply (``gru_persistent`` has another)."""
    pre = F.linear(x, weight_ih, bias_ih)
    if bias_hh is None:
        bias_hh = weight_hh.new_zeros(weight_hh.shape[0])
    return recurrence(pre, h0, weight_hh, bias_hh, batch_sizes, prev_index)


def torch_gates_packed(
    x: Tensor,
    h0: Tensor,
    y: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    first_rows: int,
    prev_index: Tensor,
) -> Tensor:
    """[N, 2H] gates z | r of every packed row, recomputed from the layer's outputs y [N, H]: each
    row's previous state is known once y is, so this is two matmuls over all rows, not a loop."""
    hidden = weight_hh.shape[1]
    prev_states = torch.cat([h0[:first_rows], y.index_select(0, prev_index)])
    rows = 2 * hidden  # the r and z rows of the weights
    pre = F.linear(x, weight_ih[:rows], None if bias_ih is None else bias_ih[:rows])
    recurrent = F.linear(prev_states, weight_hh[:rows], None if bias_hh is None else bias_hh[:rows])
    rz = torch.sigmoid(pre + recurrent)
    return torch.cat([rz[:, hidden:], rz[:, :hidden]], 1)
