"""Persistent GRU kernels (Triton) for both cells: the recurrent weights stay on chip for every step.

Why: at hidden 256-1024 cuDNN's GRU is not persistent (a launch per step, ~20-40 us each fwd+bwd
even graph-captured), and the cho2014 kernel (``cho2014_triton``) re-reads the 3H x H recurrent
weights from memory every step. Here one launch runs a whole direction: program p owns BH hidden
units and loads their slice of the recurrent weights into registers once; each step it reads the
full previous state from global memory, writes its BH units, and waits at a grid-wide barrier
(an atomic counter) for the other programs. All programs must therefore be resident at once:
their number, ceil(H / BH), must not exceed the SM count (``usable`` checks it), and the launch is
cooperative, which the driver refuses rather than start a grid that could not all be resident.

The work is on packed rows (rows sorted longest first, step t holds ``batch_sizes[t]`` rows: no
padding is computed), with the same inputs and results as the step loops ``gru_scan.TorchScan``
and ``cho2014.ChoScan``. Per step the torch cell needs one barrier forward and one backward; the
cho2014 cell two each (its reset gate multiplies the state before the recurrent matmul, so r of
every unit must be known before any candidate). The backward's per-row factors and the weight
gradients are computed outside the kernel for all rows at once, as in the step loops.

Triton's CPU interpreter runs the programs of a launch one after the other, where a spinning
barrier would never return; so ``grid_sync=False`` launches every phase of every step on its own
(the "stepped" mode), which runs the same code except the barrier. Tests use it on the CPU; the
barrier itself is checked on a GPU by the one-off self-check in ``available`` (a barrier that
spins too long sets an error flag instead of hanging) and ``scripts/gpu_gru_check.sh``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gru_mm.nn.cho2014 import ChoScan, cho_row_factors
from gru_mm.nn.gru_scan import TorchScan, torch_row_factors

try:  # triton ships with CUDA builds of torch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

BLOCK_B = 16  # rows per tile: tl.dot needs at least 16
# Each program stages its three [H, BH] weight tiles and a [16, H] state tile in shared memory for
# tl.dot: 128 KB at hidden 512 in fp32, 256 KB at 1024, over an H100's 227 KB (sm_90 compile)
MAX_HIDDEN = 512
MAX_SPINS = 1 << 24  # a barrier waiting longer than this (seconds on any GPU) flags an error
_STATE: dict[str, bool] = {}
_FLAGS: list[Tensor] | None = None  # while the self-check runs: each launch's [counter, error flag]

if triton is not None:
    from gru_mm.nn.cho2014_triton import _sigmoid, _tanh  # the fused kernel's own

    @triton.jit
    def _grid_barrier(SYNC, target, ERR, MAX_SPINS: tl.constexpr):
        """Wait until every program has arrived `target` times in all (the counter only grows)."""
        tl.debug_barrier()  # every thread's stores of this phase are issued before we arrive
        tl.atomic_add(SYNC, 1, sem="acq_rel")
        seen = tl.atomic_add(SYNC, 0, sem="acquire")
        # after one time-out every later barrier is skipped, so a broken launch ends instead of hanging
        spins = tl.atomic_add(ERR, 0, sem="acquire") * MAX_SPINS
        while (seen < target) & (spins < MAX_SPINS):
            seen = tl.atomic_add(SYNC, 0, sem="acquire")
            spins += 1
        if spins >= MAX_SPINS:
            tl.atomic_max(ERR, 1)
        tl.debug_barrier()

    @triton.jit
    def _own_units(H, BH: tl.constexpr, HP: tl.constexpr):
        """This program's hidden units (cols, cmask), and every unit as a reduction axis (ks, kmask)."""
        cols = tl.program_id(0) * BH + tl.arange(0, BH)
        ks = tl.arange(0, HP)
        return cols, cols < H, ks, ks < H

    @triton.jit
    def _gate_tiles(M, H, ks, kmask, cols, cmask, TRANSPOSED: tl.constexpr):
        """The three gates' [HP, BH] tiles of M ([3H, H] row-major) for this program's units, loaded once
        and kept for every step. TRANSPOSED: M[g*H + cols, ks]^T, the right operand of h @ W^T (forward);
        else M[g*H + ks, cols], the right operand of dgate @ W (backward)."""
        return (
            _gate_tile(M, 0, H, ks, kmask, cols, cmask, TRANSPOSED),
            _gate_tile(M, 1, H, ks, kmask, cols, cmask, TRANSPOSED),
            _gate_tile(M, 2, H, ks, kmask, cols, cmask, TRANSPOSED),
        )

    @triton.jit
    def _gate_tile(M, g, H, ks, kmask, cols, cmask, TRANSPOSED: tl.constexpr):
        mask = kmask[:, None] & cmask[None, :]
        if TRANSPOSED:
            return tl.load(M + (g * H + cols[None, :]) * H + ks[:, None], mask=mask, other=0.0)
        return tl.load(M + (g * H + ks[:, None]) * H + cols[None, :], mask=mask, other=0.0)

    @triton.jit
    def _carried(DY, CARRY, D, off, rows, n, cols, cmask, H):
        """The backward's first phase on this program's units: d = dy + carry of the step's rows, stored
        in D; returns (d, its mask)."""
        m2 = (rows < n)[:, None] & cmask[None, :]
        own = rows[:, None] * H + cols[None, :]
        d = tl.load(DY + off * H + own, mask=m2, other=0.0) + tl.load(CARRY + own, mask=m2, other=0.0)
        tl.store(D + off * H + own, d, mask=m2)
        return d, m2

    # sizes are runtime values: one compiled variant per tile size and mode, not per batch
    @triton.jit(do_not_specialize=["T0", "T1", "B0", "BMAX", "H"])
    def _torch_fwd(
        PRE, U, BHH, Y, RZ, CAND, GN, OFF, NB, SYNC, ERR, T0, T1, B0, BMAX, H,
        BB: tl.constexpr, BH: tl.constexpr, HP: tl.constexpr, PREC: tl.constexpr,
        GRID_SYNC: tl.constexpr, MAX_SPINS: tl.constexpr,
    ):  # fmt: skip
        """Y holds h0 in its first B0 rows, then the packed outputs; OFF[t] is the first row of
        h_{t-1} in Y (OFF[t + 1] that of h_t), NB[t] the rows alive at step t."""
        cols, cmask, ks, kmask = _own_units(H, BH, HP)
        w_r, w_z, w_n = _gate_tiles(U, H, ks, kmask, cols, cmask, True)  # resident for all steps
        b_r = tl.load(BHH + cols, mask=cmask, other=0.0)[None, :]
        b_z = tl.load(BHH + H + cols, mask=cmask, other=0.0)[None, :]
        b_n = tl.load(BHH + 2 * H + cols, mask=cmask, other=0.0)[None, :]
        for t in range(T0, T1):
            prev = tl.load(OFF + t)
            cur = tl.load(OFF + t + 1)
            n = tl.load(NB + t)
            for rb in range(0, BMAX, BB):
                if rb < n:  # a dynamic loop bound would be simpler but breaks the interpreter
                    rows = rb + tl.arange(0, BB)
                    rmask = rows < n
                    hp = tl.load(
                        Y + (prev + rows[:, None]) * H + ks[None, :],
                        mask=rmask[:, None] & kmask[None, :], other=0.0, cache_modifier=".cg",
                    )  # fmt: skip
                    m2 = rmask[:, None] & cmask[None, :]
                    at = (cur - B0 + rows[:, None]) * H + cols[None, :]  # packed row, own units
                    pre = PRE + (cur - B0 + rows[:, None]) * 3 * H + cols[None, :]
                    r = _sigmoid(
                        tl.load(pre, mask=m2, other=0.0) + tl.dot(hp, w_r, input_precision=PREC) + b_r
                    )
                    z = _sigmoid(
                        tl.load(pre + H, mask=m2, other=0.0) + tl.dot(hp, w_z, input_precision=PREC) + b_z
                    )
                    g_n = tl.dot(hp, w_n, input_precision=PREC) + b_n
                    c = _tanh(tl.load(pre + 2 * H, mask=m2, other=0.0) + r * g_n)
                    h_old = tl.load(
                        Y + (prev + rows[:, None]) * H + cols[None, :],
                        mask=m2,
                        other=0.0,
                        cache_modifier=".cg",
                    )
                    tl.store(Y + (cur + rows[:, None]) * H + cols[None, :], c + z * (h_old - c), mask=m2)
                    rz = RZ + (cur - B0 + rows[:, None]) * 2 * H + cols[None, :]
                    tl.store(rz, r, mask=m2)
                    tl.store(rz + H, z, mask=m2)
                    tl.store(CAND + at, c, mask=m2)
                    tl.store(GN + at, g_n, mask=m2)
            if GRID_SYNC:
                _grid_barrier(SYNC, tl.num_programs(0) * (t - T0 + 1), ERR, MAX_SPINS)

    @triton.jit(do_not_specialize=["T0", "T1", "B0", "BMAX", "H"])
    def _torch_bwd(
        DY, KG, RZ, U, D, CARRY, OFF, NB, SYNC, ERR, T0, T1, B0, BMAX, H,
        BB: tl.constexpr, BH: tl.constexpr, HP: tl.constexpr, PREC: tl.constexpr,
        PHASES: tl.constexpr, GRID_SYNC: tl.constexpr, MAX_SPINS: tl.constexpr,
    ):  # fmt: skip
        """Steps T1-1 down to T0. Phase 1: d = dy + carry on own units, into D. Phase 2 (after
        every program's phase 1): carry = d * z + (d * kg) @ U on own units, summed over all of d."""
        cols, cmask, ks, kmask = _own_units(H, BH, HP)
        u_r, u_z, u_n = _gate_tiles(U, H, ks, kmask, cols, cmask, False)
        for i in range(T0, T1):
            t = T0 + T1 - 1 - i
            off = tl.load(OFF + t + 1) - B0
            n = tl.load(NB + t)
            if PHASES & 1:
                for rb in range(0, BMAX, BB):
                    if rb < n:
                        _carried(DY, CARRY, D, off, rb + tl.arange(0, BB), n, cols, cmask, H)
                tl.debug_barrier()
            if GRID_SYNC:
                _grid_barrier(SYNC, tl.num_programs(0) * (i - T0 + 1), ERR, MAX_SPINS)
            if PHASES & 2:
                for rb in range(0, BMAX, BB):
                    if rb < n:
                        rows = rb + tl.arange(0, BB)
                        rmask = rows < n
                        mk = rmask[:, None] & kmask[None, :]
                        d_all = tl.load(
                            D + (off + rows[:, None]) * H + ks[None, :],
                            mask=mk,
                            other=0.0,
                            cache_modifier=".cg",
                        )
                        kg = KG + (off + rows[:, None]) * 3 * H + ks[None, :]
                        acc = tl.dot(d_all * tl.load(kg, mask=mk, other=0.0), u_r, input_precision=PREC)
                        acc += tl.dot(d_all * tl.load(kg + H, mask=mk, other=0.0), u_z, input_precision=PREC)
                        acc += tl.dot(
                            d_all * tl.load(kg + 2 * H, mask=mk, other=0.0), u_n, input_precision=PREC
                        )
                        m2 = rmask[:, None] & cmask[None, :]
                        d = tl.load(D + (off + rows[:, None]) * H + cols[None, :], mask=m2, other=0.0)
                        z = tl.load(
                            RZ + (off + rows[:, None]) * 2 * H + H + cols[None, :], mask=m2, other=0.0
                        )
                        tl.store(CARRY + rows[:, None] * H + cols[None, :], d * z + acc, mask=m2)
                tl.debug_barrier()  # the next step's phase 1 reads this carry

    @triton.jit(do_not_specialize=["T0", "T1", "B0", "BMAX", "H"])
    def _cho_fwd(
        PRE, U, Y, ZR, CAND, Q, OFF, NB, SYNC, ERR, T0, T1, B0, BMAX, H,
        BB: tl.constexpr, BH: tl.constexpr, HP: tl.constexpr, PREC: tl.constexpr,
        PHASES: tl.constexpr, GRID_SYNC: tl.constexpr, MAX_SPINS: tl.constexpr,
    ):  # fmt: skip
        """Internal gate order (candidate | z | r). Phase 1: z, r and q = r * h_{t-1} on own units.
        Phase 2 (after every program's q): candidate and h_t on own units."""
        cols, cmask, ks, kmask = _own_units(H, BH, HP)
        w_c, w_z, w_r = _gate_tiles(U, H, ks, kmask, cols, cmask, True)
        for i in range(T0, T1):
            prev = tl.load(OFF + i)
            cur = tl.load(OFF + i + 1)
            n = tl.load(NB + i)
            if PHASES & 1:
                for rb in range(0, BMAX, BB):
                    if rb < n:
                        rows = rb + tl.arange(0, BB)
                        rmask = rows < n
                        hp = tl.load(
                            Y + (prev + rows[:, None]) * H + ks[None, :],
                            mask=rmask[:, None] & kmask[None, :], other=0.0, cache_modifier=".cg",
                        )  # fmt: skip
                        m2 = rmask[:, None] & cmask[None, :]
                        pre = PRE + (cur - B0 + rows[:, None]) * 3 * H + cols[None, :]
                        z = _sigmoid(
                            tl.load(pre + H, mask=m2, other=0.0) + tl.dot(hp, w_z, input_precision=PREC)
                        )
                        r = _sigmoid(
                            tl.load(pre + 2 * H, mask=m2, other=0.0) + tl.dot(hp, w_r, input_precision=PREC)
                        )
                        zr = ZR + (cur - B0 + rows[:, None]) * 2 * H + cols[None, :]
                        tl.store(zr, z, mask=m2)
                        tl.store(zr + H, r, mask=m2)
                        h_old = tl.load(
                            Y + (prev + rows[:, None]) * H + cols[None, :],
                            mask=m2,
                            other=0.0,
                            cache_modifier=".cg",
                        )
                        tl.store(Q + (cur - B0 + rows[:, None]) * H + cols[None, :], r * h_old, mask=m2)
                tl.debug_barrier()
            if GRID_SYNC:
                _grid_barrier(SYNC, tl.num_programs(0) * (2 * (i - T0) + 1), ERR, MAX_SPINS)
            if PHASES & 2:
                for rb in range(0, BMAX, BB):
                    if rb < n:
                        rows = rb + tl.arange(0, BB)
                        rmask = rows < n
                        q = tl.load(
                            Q + (cur - B0 + rows[:, None]) * H + ks[None, :],
                            mask=rmask[:, None] & kmask[None, :], other=0.0, cache_modifier=".cg",
                        )  # fmt: skip
                        m2 = rmask[:, None] & cmask[None, :]
                        at = (cur - B0 + rows[:, None]) * H + cols[None, :]
                        pre = PRE + (cur - B0 + rows[:, None]) * 3 * H + cols[None, :]
                        c = _tanh(tl.load(pre, mask=m2, other=0.0) + tl.dot(q, w_c, input_precision=PREC))
                        tl.store(CAND + at, c, mask=m2)
                        z = tl.load(
                            ZR + (cur - B0 + rows[:, None]) * 2 * H + cols[None, :], mask=m2, other=0.0
                        )
                        h_old = tl.load(
                            Y + (prev + rows[:, None]) * H + cols[None, :],
                            mask=m2,
                            other=0.0,
                            cache_modifier=".cg",
                        )
                        tl.store(
                            Y + (cur + rows[:, None]) * H + cols[None, :], h_old + z * (c - h_old), mask=m2
                        )
            if GRID_SYNC:
                _grid_barrier(SYNC, tl.num_programs(0) * (2 * (i - T0) + 2), ERR, MAX_SPINS)

    @triton.jit(do_not_specialize=["T0", "T1", "B0", "BMAX", "H"])
    def _cho_bwd(
        DY, K, KR, ZR, U, D, DPRE, CARRY, OFF, NB, SYNC, ERR, T0, T1, B0, BMAX, H,
        BB: tl.constexpr, BH: tl.constexpr, HP: tl.constexpr, PREC: tl.constexpr,
        PHASES: tl.constexpr, GRID_SYNC: tl.constexpr, MAX_SPINS: tl.constexpr,
    ):  # fmt: skip
        """Steps T1-1 down to T0, as ``ChoScan.backward``. Phase 1 (own units): d = dy + carry,
        dpre_c, dpre_z. Phase 2 (after all dpre_c): dq = dpre_c @ U_c, dpre_r, carry = d (1 - z) +
        dq r. Phase 3 (after all dpre_r): carry += dpre_zr @ U_zr."""
        cols, cmask, ks, kmask = _own_units(H, BH, HP)
        u_c, u_z, u_r = _gate_tiles(U, H, ks, kmask, cols, cmask, False)
        for i in range(T0, T1):
            t = T0 + T1 - 1 - i
            off = tl.load(OFF + t + 1) - B0
            n = tl.load(NB + t)
            if PHASES & 1:
                for rb in range(0, BMAX, BB):
                    if rb < n:
                        rows = rb + tl.arange(0, BB)
                        d, m2 = _carried(DY, CARRY, D, off, rows, n, cols, cmask, H)
                        k = K + (off + rows[:, None]) * 2 * H + cols[None, :]
                        dp = DPRE + (off + rows[:, None]) * 3 * H + cols[None, :]
                        tl.store(dp, d * tl.load(k, mask=m2, other=0.0), mask=m2)
                        tl.store(dp + H, d * tl.load(k + H, mask=m2, other=0.0), mask=m2)
                tl.debug_barrier()
            if GRID_SYNC:
                _grid_barrier(SYNC, tl.num_programs(0) * (2 * (i - T0) + 1), ERR, MAX_SPINS)
            if PHASES & 2:
                for rb in range(0, BMAX, BB):
                    if rb < n:
                        rows = rb + tl.arange(0, BB)
                        rmask = rows < n
                        dpc = tl.load(
                            DPRE + (off + rows[:, None]) * 3 * H + ks[None, :],
                            mask=rmask[:, None] & kmask[None, :], other=0.0, cache_modifier=".cg",
                        )  # fmt: skip
                        dq = tl.dot(dpc, u_c, input_precision=PREC)
                        m2 = rmask[:, None] & cmask[None, :]
                        at = (off + rows[:, None]) * H + cols[None, :]
                        dp = DPRE + (off + rows[:, None]) * 3 * H + 2 * H + cols[None, :]
                        tl.store(dp, dq * tl.load(KR + at, mask=m2, other=0.0), mask=m2)
                        zr = ZR + (off + rows[:, None]) * 2 * H + cols[None, :]
                        z = tl.load(zr, mask=m2, other=0.0)
                        r = tl.load(zr + H, mask=m2, other=0.0)
                        d = tl.load(D + at, mask=m2, other=0.0)
                        tl.store(CARRY + rows[:, None] * H + cols[None, :], d * (1.0 - z) + dq * r, mask=m2)
                tl.debug_barrier()
            if GRID_SYNC:
                _grid_barrier(SYNC, tl.num_programs(0) * (2 * (i - T0) + 2), ERR, MAX_SPINS)
            if PHASES & 4:
                for rb in range(0, BMAX, BB):
                    if rb < n:
                        rows = rb + tl.arange(0, BB)
                        rmask = rows < n
                        mk = rmask[:, None] & kmask[None, :]
                        dp = DPRE + (off + rows[:, None]) * 3 * H + ks[None, :]
                        acc = tl.dot(
                            tl.load(dp + H, mask=mk, other=0.0, cache_modifier=".cg"),
                            u_z,
                            input_precision=PREC,
                        )
                        acc += tl.dot(
                            tl.load(dp + 2 * H, mask=mk, other=0.0, cache_modifier=".cg"),
                            u_r,
                            input_precision=PREC,
                        )
                        m2 = rmask[:, None] & cmask[None, :]
                        carry = CARRY + rows[:, None] * H + cols[None, :]
                        tl.store(carry, tl.load(carry, mask=m2, other=0.0) + acc, mask=m2)
                tl.debug_barrier()


@dataclass(frozen=True)
class Plan:
    """Where each step's rows are, on the device, and how the launch is cut."""

    off: Tensor  # int32 [T + 1]: first row of h_{t-1} in the output buffer (h0 first, then packed rows)
    nb: Tensor  # int32 [T]: rows alive at step t
    steps: int
    first_rows: int  # B0 = batch_sizes[0]
    block_h: int  # BH: hidden units per program
    grid_sync: bool  # one persistent launch per direction (False: a launch per step and phase)


def _make_plan(batch_sizes: list[int], device: torch.device, grid_sync: bool | None) -> Plan:
    steps, first = len(batch_sizes), batch_sizes[0]
    offsets = [0, first]
    for n in batch_sizes[:-1]:
        offsets.append(offsets[-1] + n)
    table = torch.tensor(offsets + list(batch_sizes), dtype=torch.int32).to(device, non_blocking=True)
    if grid_sync is None:
        grid_sync = device.type == "cuda"
    return Plan(table[: steps + 1], table[steps + 1 :], steps, first, units_per_program(), grid_sync)


def units_per_program() -> int:
    """Hidden units per program: GRU_MM_PERSISTENT_BH, else 16 (at most 32 programs, at hidden 512)."""
    return int(os.environ.get("GRU_MM_PERSISTENT_BH", "16"))


def num_warps(hp: int) -> int:
    """Warps per program: ptxas (sm_90) spills registers in the torch cell's forward at hidden 128-256
    with 4 warps, and at no size up to 512 with 8."""
    return 4 if hp <= 64 else 8


def _precision() -> str:
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _launch(kernel, plan: Plan, hidden: int, phases: int, reverse: bool, *tensors: Tensor) -> None:
    """One persistent launch over every step, or (stepped mode) one launch per step and phase."""
    hp = max(16, triton.next_power_of_2(hidden))
    grid = (triton.cdiv(hidden, plan.block_h),)
    device = tensors[0].device
    sync = torch.zeros(2, dtype=torch.int32, device=device)  # [counter, error flag]
    consts = dict(BB=BLOCK_B, BH=plan.block_h, HP=hp, PREC=_precision(), MAX_SPINS=MAX_SPINS)
    if "PHASES" in kernel.arg_names:
        consts["PHASES"] = (1 << phases) - 1
    warps = num_warps(hp)
    args = (*tensors, plan.off, plan.nb, sync, sync[1:])
    bmax = plan.first_rows
    if plan.grid_sync:
        # a cooperative launch: the driver refuses it unless every program can be resident at once,
        # so a grid too large for the device fails loudly instead of spinning at the first barrier
        kernel[grid](
            *args, 0, plan.steps, plan.first_rows, bmax, hidden, **consts, GRID_SYNC=True, num_warps=warps,
            launch_cooperative_grid=True,
        )  # fmt: skip
        if _FLAGS is not None:
            _FLAGS.append(sync)
        return
    order = range(plan.steps - 1, -1, -1) if reverse else range(plan.steps)
    for t in order:
        for p in range(phases):
            if "PHASES" in consts:
                consts["PHASES"] = 1 << p
            kernel[grid](
                *args, t, t + 1, plan.first_rows, bmax, hidden, **consts, GRID_SYNC=False, num_warps=warps
            )


class TorchPersistent(torch.autograd.Function):
    """As ``gru_scan.TorchScan`` (pre [N, 3H] incl. b_ih, gate order r, z, n; h0 [batch_sizes[0], H];
    u [3H, H]; b_hh [3H]; returns y [N, H]), computed by the persistent kernels."""

    @staticmethod
    def forward(ctx, pre, h0, u, b_hh, batch_sizes, prev_index, grid_sync=None):
        n_rows, gate_width = pre.shape
        hidden = gate_width // 3
        plan = _make_plan(batch_sizes, pre.device, grid_sync)
        pre, u, b_hh = pre.contiguous(), u.contiguous(), b_hh.contiguous()
        ybuf = pre.new_empty(plan.first_rows + n_rows, hidden)
        ybuf[: plan.first_rows] = h0[: plan.first_rows]
        rz = pre.new_empty(n_rows, 2 * hidden)
        cand = pre.new_empty(n_rows, hidden)
        g_n = pre.new_empty(n_rows, hidden)  # W_hn h + b_hn, needed backward
        _launch(_torch_fwd, plan, hidden, 1, False, pre, u, b_hh, ybuf, rz, cand, g_n)
        y = ybuf[plan.first_rows :]
        ctx.plan = plan
        ctx.save_for_backward(h0, u, y, rz, cand, g_n, prev_index)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        h0, u, y, rz, cand, g_n, prev_index = ctx.saved_tensors
        plan = ctx.plan
        n_rows, hidden = y.shape
        prev_states, ka, kg = torch_row_factors(h0, y, rz, cand, g_n, prev_index, plan.first_rows)
        d = torch.empty_like(y)
        carry = y.new_zeros(plan.first_rows, hidden)
        _launch(_torch_bwd, plan, hidden, 2, True, dy.contiguous(), kg, rz, u, d, carry)
        dpre = (d.unsqueeze(1) * ka).view(n_rows, 3 * hidden)
        dg = (d.unsqueeze(1) * kg).view(n_rows, 3 * hidden)
        return dpre, carry, dg.t() @ prev_states, dg.sum(0), None, None, None


class ChoPersistent(torch.autograd.Function):
    """As ``cho2014.ChoScan`` (pre [N, 3H] internal order incl. bias; h0; u [3H, H] internal
    order; returns y [N, H] and zr [N, 2H], not differentiable), by the persistent kernels."""

    @staticmethod
    def forward(ctx, pre, h0, u, batch_sizes, prev_index, grid_sync=None):
        n_rows, gate_width = pre.shape
        hidden = gate_width // 3
        plan = _make_plan(batch_sizes, pre.device, grid_sync)
        pre, u = pre.contiguous(), u.contiguous()
        ybuf = pre.new_empty(plan.first_rows + n_rows, hidden)
        ybuf[: plan.first_rows] = h0[: plan.first_rows]
        zr = pre.new_empty(n_rows, 2 * hidden)
        cand = pre.new_empty(n_rows, hidden)
        q = pre.new_empty(n_rows, hidden)
        _launch(_cho_fwd, plan, hidden, 2, False, pre, u, ybuf, zr, cand, q)
        y = ybuf[plan.first_rows :]
        ctx.plan = plan
        ctx.save_for_backward(h0, u, y, zr, cand, q, prev_index)
        ctx.mark_non_differentiable(zr)
        return y, zr

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _dzr):
        h0, u, y, zr, cand, q, prev_index = ctx.saved_tensors
        plan = ctx.plan
        n_rows, hidden = y.shape
        if dy is None:
            dy = torch.zeros_like(y)
        prev_states, k, k_r = cho_row_factors(h0, y, zr, cand, prev_index, plan.first_rows)
        d = torch.empty_like(y)
        dpre = y.new_empty(n_rows, 3 * hidden)
        carry = y.new_zeros(plan.first_rows, hidden)
        _launch(_cho_bwd, plan, hidden, 3, True, dy.contiguous(), k, k_r, zr, u, d, dpre, carry)
        du = torch.cat([dpre[:, :hidden].t() @ q, dpre[:, hidden:].t() @ prev_states])
        return dpre, carry, du, None, None, None


def torch_recurrence(pre, h0, u, b_hh, batch_sizes, prev_index) -> Tensor:
    """``TorchScan.apply``'s call, run by the persistent kernels (``gru_scan.torch_scan_packed``)."""
    return TorchPersistent.apply(pre, h0, u, b_hh, batch_sizes, prev_index, None)


def cho_recurrence(pre, h0, u, batch_sizes, prev_index) -> tuple[Tensor, Tensor]:
    """``ChoScan.apply``'s call, run by the persistent kernels (``cho2014.cho2014_packed``)."""
    return ChoPersistent.apply(pre, h0, u, batch_sizes, prev_index, None)


def usable(x: Tensor, hidden: int) -> bool:
    """Whether the persistent kernels may run this call: float32, hidden <= MAX_HIDDEN, every
    program resident at once (ceil(H / BH) <= SM count), int32 offsets, a passing self-check."""
    if triton is None or x.dtype != torch.float32 or hidden > MAX_HIDDEN:
        return False
    if x.shape[0] * 3 * hidden >= 2**31:
        return False
    return available(x.device, hidden)


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device, hidden: int = 64) -> bool:
    """True where the kernels can run: CUDA with enough SMs (GRU_MM_NO_TRITON=1 turns it off), or
    the CPU under Triton's interpreter (tests). The self-check runs once per process and device."""
    if triton is None or os.environ.get("GRU_MM_NO_TRITON"):
        return False
    if device.type == "cpu":
        return interpreted()
    if device.type != "cuda":
        return False
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if triton.cdiv(hidden, units_per_program()) > sms:
        return False
    key = str(device)
    if key not in _STATE:
        _STATE[key] = self_check(device)
    return _STATE[key]


def self_check(device: torch.device, grid_sync: bool | None = None) -> bool:
    """Both cells against their step loops in float64, forward and backward, on a small batch
    (several programs, rows past a tile, hidden not a multiple of the tile); on a GPU also that no
    barrier timed out. Warns and returns False on any failure."""
    global _FLAGS
    _FLAGS = []
    try:
        # the first call may come from an eval loop: the check needs autograd whatever the caller set
        with torch.inference_mode(False), torch.enable_grad():
            _check(device, grid_sync)
        return True
    except Exception as exc:  # any failure: the step loops run instead
        warnings.warn(
            f"persistent GRU kernels disabled, using the step loops: {type(exc).__name__}: {exc}",
            stacklevel=3,
        )
        return False
    finally:
        _FLAGS = None


def _check(device: torch.device, grid_sync: bool | None) -> None:
    gen = torch.Generator().manual_seed(0)
    H, lengths = 40, sorted([9, 9, 7, 4, 2, 1] * 3 + [5], reverse=True)
    batch_sizes = [sum(1 for n in lengths if n > t) for t in range(lengths[0])]
    offs = [0]
    for n in batch_sizes:
        offs.append(offs[-1] + n)
    prev = torch.tensor([offs[t - 1] + i for t in range(1, len(batch_sizes)) for i in range(batch_sizes[t])])
    n_rows, first = offs[-1], batch_sizes[0]
    cases = [
        (TorchPersistent, TorchScan, [(n_rows, 3 * H), (first, H), (3 * H, H), (3 * H,)]),
        (ChoPersistent, ChoScan, [(n_rows, 3 * H), (first, H), (3 * H, H)]),
    ]
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for fast, slow, shapes in cases:
            base = [
                torch.randn(s, generator=gen, dtype=torch.float64) * (0.3 if len(s) == 2 else 1)
                for s in shapes
            ]
            dy = torch.randn(n_rows, H, generator=gen, dtype=torch.float64)
            ours = [b.float().to(device).requires_grad_() for b in base]
            ref = [b.clone().requires_grad_() for b in base]
            y = fast.apply(*ours, batch_sizes, prev.to(device), grid_sync)
            y = y[0] if isinstance(y, tuple) else y
            grads = torch.autograd.grad((y * dy.float().to(device)).sum(), ours)
            yr = slow.apply(*ref, batch_sizes, prev)
            yr = yr[0] if isinstance(yr, tuple) else yr
            ref_grads = torch.autograd.grad((yr * dy).sum(), ref)
            err = float((y.detach().cpu().double() - yr.detach()).abs().max())
            for g, r in zip(grads, ref_grads, strict=True):
                err = max(err, float((g.cpu().double() - r).abs().max()))
            if not err < 1e-4:
                raise AssertionError(f"{fast.__name__}: max error {err:.3g} against {slow.__name__}")
            if any(int(flag[1]) for flag in _FLAGS):
                raise AssertionError(f"{fast.__name__}: a grid barrier timed out")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
