"""The textbook GRU cell (Cho et al. 2014) over packed sequences, with a hand-written backward.

    z_t = sigmoid(W_z [h_{t-1}, x_t] + b_z)
    r_t = sigmoid(W_r [h_{t-1}, x_t] + b_r)
    c_t = tanh(W [r_t * h_{t-1}, x_t] + b)          (the candidate h~_t)
    h_t = (1 - z_t) * h_{t-1} + z_t * c_t

Parameters per layer and direction, in Keras' gate order (z, r, candidate):
``weight_ih`` [3H, F], ``weight_hh`` [3H, H], ``bias`` [3H] (one bias per gate, as in the paper).

Why a hand-written loop and backward: neither ATen nor cuDNN has this cell (they apply the reset
gate after the recurrent matmul), and autograd over a per-step Python loop records ~10 nodes per
step and replays them one by one. Here the input projection of all steps is one matmul outside the
loop; the loop itself runs 6 in-place ops per step forward and 7 backward on the packed rows that
are still alive (no work on padding), and the recurrent weight gradients are two matmuls after it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Internally gates are stored as [candidate | z | r] so that the two products of the backward step
# (with z and with the candidate) are one broadcast op, and z|r stay adjacent for one matmul.


def to_internal(w: Tensor, hidden: int) -> Tensor:
    """Keras order (z, r, c) along dim 0 -> internal order (c, z, r)."""
    return torch.roll(w, hidden, 0)


def cho_row_factors(
    h0: Tensor, y: Tensor, zr: Tensor, cand: Tensor, prev_index: Tensor, first_rows: int
) -> tuple[Tensor, Tensor, Tensor]:
    """What the cho2014 backward needs of every packed row before the loop: (the previous states [N, H];
    k [N, 2, H], d pre_c and d pre_z per unit of carried gradient; k_r [N, H], d pre_r per unit of q's)."""
    hidden = y.shape[1]
    prev_states = torch.cat([h0[:first_rows], y.index_select(0, prev_index)])
    z, r = zr[:, :hidden], zr[:, hidden:]
    k = torch.empty(y.shape[0], 2, hidden, dtype=y.dtype, device=y.device)
    torch.mul(z, 1 - cand * cand, out=k[:, 0])  # d pre_c / d h_t
    torch.mul((cand - prev_states) * z, 1 - z, out=k[:, 1])  # d pre_z / d h_t
    k_r = prev_states * r * (1 - r)  # d pre_r / d q-grad
    return prev_states, k, k_r


class ChoScan(torch.autograd.Function):
    """Recurrence over packed rows. pre: [N, 3H] input projections (internal order, bias included);
    h0: [batch_sizes[0], H]; u: [3H, H] recurrent kernel (internal order).
    Returns y [N, H] (h_t per packed row) and zr [N, 2H] (z_t | r_t, not differentiable)."""

    @staticmethod
    def forward(ctx, pre: Tensor, h0: Tensor, u: Tensor, batch_sizes: list[int], prev_index: Tensor):
        n_rows, gate_width = pre.shape
        hidden = gate_width // 3
        u_c_t = u[:hidden].t()
        u_zr_t = u[hidden:].t()
        y = pre.new_empty(n_rows, hidden)
        zr = pre.new_empty(n_rows, 2 * hidden)
        cand = pre.new_empty(n_rows, hidden)
        q = pre.new_empty(n_rows, hidden)  # r_t * h_{t-1}, kept for dU_c
        h = h0
        off = 0
        for n in batch_sizes:
            end = off + n
            h_prev = h[:n]
            g = torch.addmm(pre[off:end, hidden:], h_prev, u_zr_t, out=zr[off:end])
            g.sigmoid_()
            torch.mul(g[:, hidden:], h_prev, out=q[off:end])
            c = torch.addmm(pre[off:end, :hidden], q[off:end], u_c_t, out=cand[off:end])
            c.tanh_()
            h = torch.lerp(h_prev, c, g[:, :hidden], out=y[off:end])
            off = end
        ctx.batch_sizes = batch_sizes
        ctx.save_for_backward(h0, u, y, zr, cand, q, prev_index)
        ctx.mark_non_differentiable(zr)
        return y, zr

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _dzr: Tensor | None):
        h0, u, y, zr, cand, q, prev_index = ctx.saved_tensors
        batch_sizes = ctx.batch_sizes
        n_rows, hidden = y.shape
        if dy is None:
            dy = torch.zeros_like(y)
        dy = dy.contiguous()
        first_rows = batch_sizes[0]
        # Everything that does not depend on the carried gradient is computed for all rows at once.
        prev_states, k, k_r = cho_row_factors(h0, y, zr, cand, prev_index, first_rows)
        z, r = zr[:, :hidden], zr[:, hidden:]
        one_minus_z = 1 - z
        u_c = u[:hidden]
        u_zr = u[hidden:]

        dpre = torch.empty(n_rows, 3 * hidden, dtype=y.dtype, device=y.device)
        dpre3 = dpre.view(n_rows, 3, hidden)
        carry = y.new_zeros(first_rows, hidden)
        dh = y.new_empty(first_rows, hidden)
        dq = y.new_empty(first_rows, hidden)
        tmp = y.new_empty(first_rows, hidden)
        end = n_rows
        for n in reversed(batch_sizes):
            off = end - n
            d = torch.add(dy[off:end], carry[:n], out=dh[:n])
            torch.mul(d.unsqueeze(1), k[off:end], out=dpre3[off:end, :2])
            g = torch.mm(dpre[off:end, :hidden], u_c, out=dq[:n])
            torch.mul(g, k_r[off:end], out=dpre[off:end, 2 * hidden :])
            t = torch.mul(d, one_minus_z[off:end], out=tmp[:n])
            t.addcmul_(g, r[off:end])
            torch.addmm(t, dpre[off:end, hidden:], u_zr, out=carry[:n])
            end = off
        du = torch.cat([dpre[:, :hidden].t() @ q, dpre[:, hidden:].t() @ prev_states])
        return dpre, carry, du, None, None


def cho2014_packed(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias: Tensor | None,
    batch_sizes: list[int],
    prev_index: Tensor,
    recurrence: Callable[..., tuple[Tensor, Tensor]] = ChoScan.apply,
) -> tuple[Tensor, Tensor]:
    """One layer, one direction on packed rows x [N, F]; returns (y [N, H], zr [N, 2H] in z|r order).
    recurrence: what runs the steps, called as ChoScan.apply (``gru_persistent`` has another)."""
    hidden = weight_hh.shape[1]
    w = to_internal(weight_ih, hidden)
    b = None if bias is None else to_internal(bias, hidden)
    pre = F.linear(x, w, b)
    return recurrence(pre, h0, to_internal(weight_hh, hidden), batch_sizes, prev_index)
