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

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


class TorchScan(torch.autograd.Function):
    """pre: [N, 3H] input projections incl. b_ih (gate order r, z, n); h0: [batch_sizes[0], H];
    u: [3H, H] recurrent kernel; b_hh: [3H]. Returns y [N, H]."""

    @staticmethod
    def forward(
        ctx, pre: Tensor, h0: Tensor, u: Tensor, b_hh: Tensor, batch_sizes: list[int], prev_index: Tensor
    ):
        n_rows, three_h = pre.shape
        hid = three_h // 3
        u_t = u.t()
        y = pre.new_empty(n_rows, hid)
        g = pre.new_empty(n_rows, three_h)  # W_h h + b_h per row (its n part is needed backward)
        rz = pre.new_empty(n_rows, 2 * hid)
        cand = pre.new_empty(n_rows, hid)
        h = h0
        off = 0
        for n in batch_sizes:
            end = off + n
            hp = h[:n]
            gs = torch.addmm(b_hh, hp, u_t, out=g[off:end])
            s = torch.add(pre[off:end, : 2 * hid], gs[:, : 2 * hid], out=rz[off:end])
            s.sigmoid_()
            c = torch.addcmul(pre[off:end, 2 * hid :], s[:, :hid], gs[:, 2 * hid :], out=cand[off:end])
            c.tanh_()
            h = torch.lerp(c, hp, s[:, hid:], out=y[off:end])
            off = end
        ctx.batch_sizes = batch_sizes
        ctx.save_for_backward(h0, u, y, g, rz, cand, prev_index)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        h0, u, y, g, rz, cand, prev_index = ctx.saved_tensors
        bs = ctx.batch_sizes
        n_rows, hid = y.shape
        b0 = bs[0]
        dy = dy.contiguous()
        hprev = torch.cat([h0[:b0], y.index_select(0, prev_index)])
        r, z = rz[:, :hid], rz[:, hid:]
        k_n = (1 - z) * (1 - cand * cand)  # d pre_n / d h'
        # per-row factors: grad wrt the input projections (ka) and wrt W_h h + b_h (kg), times dh
        ka = torch.empty(n_rows, 3, hid, dtype=y.dtype, device=y.device)
        torch.mul(k_n * g[:, 2 * hid :], r * (1 - r), out=ka[:, 0])
        torch.mul((hprev - cand) * z, 1 - z, out=ka[:, 1])
        ka[:, 2] = k_n
        kg = ka.clone()
        kg[:, 2] *= r
        dpre = torch.empty(n_rows, 3, hid, dtype=y.dtype, device=y.device)
        dg = torch.empty(n_rows, 3 * hid, dtype=y.dtype, device=y.device)
        carry = y.new_zeros(b0, hid)
        dh = y.new_empty(b0, hid)
        tmp = y.new_empty(b0, hid)
        end = n_rows
        for n in reversed(bs):
            off = end - n
            d = torch.add(dy[off:end], carry[:n], out=dh[:n])
            d3 = d.unsqueeze(1)
            torch.mul(d3, ka[off:end], out=dpre[off:end])
            torch.mul(d3, kg[off:end], out=dg[off:end].view(n, 3, hid))
            t = torch.mul(d, z[off:end], out=tmp[:n])
            torch.addmm(t, dg[off:end], u, out=carry[:n])
            end = off
        du = dg.t() @ hprev
        return dpre.view(n_rows, 3 * hid), carry, du, dg.sum(0), None, None


def torch_scan_packed(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    batch_sizes: list[int],
    prev_index: Tensor,
) -> Tensor:
    """One layer, one direction of torch's GRU on packed rows x [N, F]; returns y [N, H]."""
    pre = F.linear(x, weight_ih, bias_ih)
    if bias_hh is None:
        bias_hh = weight_hh.new_zeros(weight_hh.shape[0])
    return TorchScan.apply(pre, h0, weight_hh, bias_hh, batch_sizes, prev_index)


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
    hid = weight_hh.shape[1]
    hprev = torch.cat([h0[:first_rows], y.index_select(0, prev_index)])
    pre = F.linear(x, weight_ih[: 2 * hid], None if bias_ih is None else bias_ih[: 2 * hid])
    recurrent = F.linear(hprev, weight_hh[: 2 * hid], None if bias_hh is None else bias_hh[: 2 * hid])
    rz = torch.sigmoid(pre + recurrent)
    return torch.cat([rz[:, hid:], rz[:, :hid]], 1)
