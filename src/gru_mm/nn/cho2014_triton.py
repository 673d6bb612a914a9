"""A fused Triton kernel for the cho2014 recurrence on CUDA (forward and backward).

Why: on a GPU the Python step loop of ``cho2014.ChoScan`` launches ~13 kernels per step, so it is
bound by launch latency (~75 us/step) while cuDNN's GRU needs 5-80 us per step. Here one program
owns BLOCK_B rows (sequences) and runs *all* their time steps itself: rows of a GRU never interact,
so no grid-wide synchronisation is needed, only barriers inside the program between the phases of
a step. The state lives in the output buffer (Y[t] is h_{t-1}); the recurrent kernel is read from
L2 every step. Rows are sorted longest first so a program stops at its own longest row.

Layout: time-major padded tensors; gates in the internal order (candidate | z | r) of cho2014.py.
Matmuls use IEEE fp32 unless TF32 is allowed for matmuls (torch.backends.cuda.matmul.allow_tf32).
``available()`` runs a one-off self-check against the step loop and disables this path (with a
warning) if the kernel fails or disagrees, so a broken toolchain costs speed, never correctness.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

try:  # triton ships with CUDA builds of torch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

BLOCK_B = 16  # rows per program: tl.dot needs at least 16
ENABLED = True  # the benchmark switches it off to time the step loop on CUDA
_STATE: dict[str, bool] = {}

if triton is not None:

    @triton.jit
    def _sigmoid(x):  # also the persistent kernels' (gru_persistent)
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _tanh(x):
        # tanh(x) = 2 sigmoid(2x) - 1; written out because tl has no portable tanh
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0

    @triton.jit
    def _tile_matmul(
        A, a_stride, W, w_stride, rows, rmask, cols, cmask, K,
        BB: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        """The [BB, BN] tile A[rows, :K] @ W[:K, cols] of two row-major matrices (row strides given),
        accumulated in fp32; every matmul of a step, forward and backward, is one of these."""
        acc = tl.zeros([BB, BN], dtype=tl.float32)
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            kmask = ks < K
            a = tl.load(
                A + rows[:, None] * a_stride + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0
            )
            w = tl.load(
                W + ks[:, None] * w_stride + cols[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0
            )
            acc += tl.dot(a, w, input_precision=PREC)
        return acc

    # sizes are runtime values: one compiled variant per tile size and precision, not per batch
    @triton.jit(do_not_specialize=["B", "T_MAX", "H"])
    def _fwd_kernel(
        PRE, Y, ZR, C, Q, UZRT, UCT, LENS,
        B, T_MAX, H, BB: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        rows = pid * BB + tl.arange(0, BB)
        rmask = rows < B
        t_end = tl.load(LENS + pid * BB)  # rows are sorted longest first
        H2 = 2 * H
        H3 = 3 * H
        for t in range(0, T_MAX):
            if t < t_end:  # a dynamic loop bound would be simpler but breaks the interpreter
                hp_ptr = Y + t * B * H  # Y[t] holds h_{t-1}; Y[0] = h0
                # phase 1: z|r = sigmoid(pre_zr + h_{t-1} U_zr^T)
                for n0 in range(0, H2, BN):
                    cols = n0 + tl.arange(0, BN)
                    cmask = cols < H2
                    acc = _tile_matmul(hp_ptr, H, UZRT, H2, rows, rmask, cols, cmask, H, BB, BK, BN, PREC)
                    m2 = rmask[:, None] & cmask[None, :]
                    p = tl.load(PRE + t * B * H3 + rows[:, None] * H3 + H + cols[None, :], mask=m2, other=0.0)
                    tl.store(ZR + t * B * H2 + rows[:, None] * H2 + cols[None, :], _sigmoid(acc + p), mask=m2)
                tl.debug_barrier()
                # phase 2: q = r * h_{t-1}
                for k0 in range(0, H, BK):
                    ks = k0 + tl.arange(0, BK)
                    m2 = rmask[:, None] & (ks < H)[None, :]
                    r = tl.load(ZR + t * B * H2 + rows[:, None] * H2 + H + ks[None, :], mask=m2, other=0.0)
                    hp = tl.load(hp_ptr + rows[:, None] * H + ks[None, :], mask=m2, other=0.0)
                    tl.store(Q + t * B * H + rows[:, None] * H + ks[None, :], r * hp, mask=m2)
                tl.debug_barrier()
                # phase 3: c = tanh(pre_c + q U_c^T); h_t = h_{t-1} + z (c - h_{t-1})
                for n0 in range(0, H, BN):
                    cols = n0 + tl.arange(0, BN)
                    cmask = cols < H
                    acc = _tile_matmul(
                        Q + t * B * H, H, UCT, H, rows, rmask, cols, cmask, H, BB, BK, BN, PREC
                    )
                    m2 = rmask[:, None] & cmask[None, :]
                    p = tl.load(PRE + t * B * H3 + rows[:, None] * H3 + cols[None, :], mask=m2, other=0.0)
                    c = _tanh(acc + p)
                    tl.store(C + t * B * H + rows[:, None] * H + cols[None, :], c, mask=m2)
                    hp = tl.load(hp_ptr + rows[:, None] * H + cols[None, :], mask=m2, other=0.0)
                    z = tl.load(ZR + t * B * H2 + rows[:, None] * H2 + cols[None, :], mask=m2, other=0.0)
                    tl.store(
                        Y + (t + 1) * B * H + rows[:, None] * H + cols[None, :], hp + z * (c - hp), mask=m2
                    )
                tl.debug_barrier()

    @triton.jit(do_not_specialize=["B", "T_MAX", "H"])
    def _bwd_kernel(
        DY, Y, ZR, C, DPRE, CARRY, DH, TMP, UC, UZR, LENS,
        B, T_MAX, H, BB: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        rows = pid * BB + tl.arange(0, BB)
        rmask = rows < B
        t_end = tl.load(LENS + pid * BB)  # rows are sorted longest first
        H2 = 2 * H
        H3 = 3 * H
        for i in range(0, T_MAX):
            t = T_MAX - 1 - i
            if t < t_end:
                hp_ptr = Y + t * B * H
                # phase A: dh = dy + carry; grads of pre_c and pre_z
                for k0 in range(0, H, BK):
                    ks = k0 + tl.arange(0, BK)
                    m2 = rmask[:, None] & (ks < H)[None, :]
                    at = rows[:, None] * H + ks[None, :]
                    dh = tl.load(DY + t * B * H + at, mask=m2, other=0.0) + tl.load(
                        CARRY + at, mask=m2, other=0.0
                    )
                    tl.store(DH + at, dh, mask=m2)
                    z = tl.load(ZR + t * B * H2 + rows[:, None] * H2 + ks[None, :], mask=m2, other=0.0)
                    c = tl.load(C + t * B * H + at, mask=m2, other=0.0)
                    hp = tl.load(hp_ptr + at, mask=m2, other=0.0)
                    base = DPRE + t * B * H3 + rows[:, None] * H3 + ks[None, :]
                    tl.store(base, dh * z * (1.0 - c * c), mask=m2)
                    tl.store(base + H, dh * (c - hp) * z * (1.0 - z), mask=m2)
                tl.debug_barrier()
                # phase B: dq = dpre_c U_c; grad of pre_r; the direct part of the carried gradient
                for n0 in range(0, H, BN):
                    cols = n0 + tl.arange(0, BN)
                    cmask = cols < H
                    acc = _tile_matmul(
                        DPRE + t * B * H3, H3, UC, H, rows, rmask, cols, cmask, H, BB, BK, BN, PREC
                    )
                    m2 = rmask[:, None] & cmask[None, :]
                    at = rows[:, None] * H + cols[None, :]
                    hp = tl.load(hp_ptr + at, mask=m2, other=0.0)
                    z = tl.load(ZR + t * B * H2 + rows[:, None] * H2 + cols[None, :], mask=m2, other=0.0)
                    r = tl.load(ZR + t * B * H2 + rows[:, None] * H2 + H + cols[None, :], mask=m2, other=0.0)
                    dh = tl.load(DH + at, mask=m2, other=0.0)
                    tl.store(
                        DPRE + t * B * H3 + rows[:, None] * H3 + H2 + cols[None, :],
                        acc * hp * r * (1.0 - r),
                        mask=m2,
                    )
                    tl.store(TMP + at, dh * (1.0 - z) + acc * r, mask=m2)
                tl.debug_barrier()
                # phase C: carry = direct part + dpre_zr U_zr
                for n0 in range(0, H, BN):
                    cols = n0 + tl.arange(0, BN)
                    cmask = cols < H
                    acc = _tile_matmul(
                        DPRE + t * B * H3 + H, H3, UZR, H, rows, rmask, cols, cmask, H2, BB, BK, BN, PREC
                    )
                    m2 = rmask[:, None] & cmask[None, :]
                    at = rows[:, None] * H + cols[None, :]
                    tl.store(CARRY + at, acc + tl.load(TMP + at, mask=m2, other=0.0), mask=m2)
                tl.debug_barrier()


def _blocks(hidden: int) -> tuple[int, int]:
    b = max(16, min(64, triton.next_power_of_2(hidden)))
    return b, b


def _precision() -> str:
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


class ChoTriton(torch.autograd.Function):
    """pre: [T, B, 3H] time-major (internal gate order), h0: [B, H], u: [3H, H] (internal order),
    lens: [B] int32 on the device (rows sorted longest first). Returns y [T, B, H], zr [T, B, 2H].
    Steps past a row's length hold garbage (finite); callers mask them."""

    @staticmethod
    def forward(ctx, pre: Tensor, h0: Tensor, u: Tensor, lens: Tensor):
        T, B, three_h = pre.shape
        H = three_h // 3
        pre = pre.contiguous().float()
        u = u.float()
        y = pre.new_zeros(T + 1, B, H)  # zeros: blocks of empty rows never write theirs
        y[0] = h0
        zr = pre.new_zeros(T, B, 2 * H)
        cand = pre.new_zeros(T, B, H)
        q = pre.new_zeros(T, B, H)
        bk, bn = _blocks(H)
        grid = (triton.cdiv(B, BLOCK_B),)
        _fwd_kernel[grid](
            pre, y, zr, cand, q, u[H:].t().contiguous(), u[:H].t().contiguous(), lens,
            B, T, H, BLOCK_B, bk, bn, _precision(),
        )  # fmt: skip
        ctx.save_for_backward(u, y, zr, cand, q, lens)
        ctx.mark_non_differentiable(zr)
        return y[1:], zr

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _dzr):
        u, y, zr, cand, q, lens = ctx.saved_tensors
        T, B, H = cand.shape
        dy = dy.contiguous().float()
        dpre = torch.zeros(T, B, 3 * H, dtype=dy.dtype, device=dy.device)
        carry = dy.new_zeros(B, H)
        dh = dy.new_zeros(B, H)
        tmp = dy.new_zeros(B, H)
        bk, bn = _blocks(H)
        grid = (triton.cdiv(B, BLOCK_B),)
        _bwd_kernel[grid](
            dy, y, zr, cand, dpre, carry, dh, tmp, u[:H].contiguous(), u[H:].contiguous(), lens,
            B, T, H, BLOCK_B, bk, bn, _precision(),
        )  # fmt: skip
        flat = dpre.view(T * B, 3 * H)
        du = torch.cat([flat[:, :H].t() @ q.view(T * B, H), flat[:, H:].t() @ y[:-1].reshape(T * B, H)])
        return dpre, carry, du, None


# Above this hidden size the step loop is faster (each program streams the 3H x H recurrent weights
# every step): docs/benchmarks.md, "Why the path thresholds".
MAX_HIDDEN = 256


def usable(x: Tensor, batch: int, steps: int, hidden: int) -> bool:
    """Whether ChoTriton may run this call: CUDA, float32, hidden <= MAX_HIDDEN, int32 offsets,
    a passing self-check."""
    if x.dtype != torch.float32 or hidden > MAX_HIDDEN or (steps + 1) * batch * 3 * hidden >= 2**31:
        return False
    return available(x.device)


def available(device: torch.device) -> bool:
    """True when the kernel can be used on this device (GRU_MM_NO_TRITON=1 turns it off);
    the self-check runs once per process and device."""
    if not ENABLED or triton is None or device.type != "cuda" or os.environ.get("GRU_MM_NO_TRITON"):
        return False
    key = str(device)
    if key not in _STATE:
        _STATE[key] = _self_check(device)
    return _STATE[key]


def _self_check(device: torch.device) -> bool:
    # the first call may come from an eval loop: the check needs autograd whatever the caller set
    with torch.inference_mode(False), torch.enable_grad():
        return _check(device)


def _check(device: torch.device) -> bool:
    from gru_mm.nn.cho2014 import ChoScan

    try:
        gen = torch.Generator().manual_seed(0)
        T, B, H = 7, 20, 24  # B > BLOCK_B and H not a multiple of the tile: exercises the masks
        lens = torch.tensor(sorted([7, 7, 5, 3, 1] * 4, reverse=True))
        pre = torch.randn(T, B, 3 * H, generator=gen, dtype=torch.float64).to(device)
        h0 = torch.randn(B, H, generator=gen, dtype=torch.float64).to(device)
        u = (torch.randn(3 * H, H, generator=gen, dtype=torch.float64) * 0.3).to(device)
        dy = torch.randn(T, B, H, generator=gen, dtype=torch.float64).to(device)
        dy = dy * (torch.arange(T)[:, None] < lens[None, :]).to(device).unsqueeze(-1)
        args = [a.float().requires_grad_() for a in (pre, h0, u)]
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            y, _ = ChoTriton.apply(*args, lens.to(device, torch.int32))
            grads = torch.autograd.grad((y * dy.float()).sum(), args)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        # reference: the step loop on packed rows, in float64
        bs = [int((lens > t).sum()) for t in range(T)]
        rows = [(t, i) for t in range(T) for i in range(bs[t])]
        offs = [sum(bs[:t]) for t in range(T)]
        prev = torch.tensor([offs[t - 1] + i for t, i in rows if t > 0], dtype=torch.int64, device=device)
        sel_t = torch.tensor([t for t, _ in rows], device=device)
        sel_i = torch.tensor([i for _, i in rows], device=device)
        ref_args = [a.detach().double().requires_grad_() for a in (pre, h0, u)]
        yr, _ = ChoScan.apply(ref_args[0][sel_t, sel_i], ref_args[1], ref_args[2], bs, prev)
        ref_grads = torch.autograd.grad((yr * dy[sel_t, sel_i]).sum(), ref_args)
        err = float((y.detach()[sel_t, sel_i].double() - yr.detach()).abs().max())
        for g, r in zip(grads, ref_grads, strict=True):  # dense; zero at padding on both sides
            err = max(err, float((g.double() - r).abs().max()))
        if not err < 1e-4:
            raise AssertionError(f"max error {err:.3g}")
        return True
    except Exception as exc:  # any failure: fall back to the exact step loop
        warnings.warn(
            f"cho2014 Triton kernel disabled, using the step loop: {type(exc).__name__}: {exc}", stacklevel=3
        )
        return False
