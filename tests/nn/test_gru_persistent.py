"""The persistent GRU kernels (``gru_mm.nn.gru_persistent``), both cells: run by Triton's CPU
interpreter in stepped mode (a launch per step and phase, since the interpreter runs programs one
after another and a grid barrier would never return) against the step loops; compiled for an H100
with the grid barrier; and on CUDA, when there is one, with the barrier running."""

import inspect
import os
import subprocess
import textwrap

import pytest
import torch
from nn_testlib import CUDA, run_interpreted

pytest.importorskip("triton")

LAYER_SCRIPT = textwrap.dedent(
    """
    import torch

    from gru_mm.nn import GRU, gru_persistent

    torch.manual_seed(0)
    # B > one row tile, H over two programs of 16 units and not a multiple of them, empty rows,
    # both directions, h0, gates (layers stack the same way on every path: test_gru_exact)
    B, T, F, H = 19, 6, 5, 20
    lengths = torch.tensor([6, 0, 3, 1, 6, 2, 5, 0, 4, 4, 1, 6, 3, 2, 2, 5, 1, 6, 3])
    x = torch.randn(B, T, F)
    h0 = torch.randn(2, B, H)
    go, gh = torch.randn(B, T, 2 * H), torch.randn(2, B, H)
    launches = []
    real_launch = gru_persistent._launch
    gru_persistent._launch = lambda kernel, *a: launches.append(kernel) or real_launch(kernel, *a)
    for cell in ("torch", "cho2014"):
        m = GRU(F, H, bidirectional=True, cell=cell)
        results = []
        for path in ("auto", "persistent"):
            m.path = path
            launches.clear()
            xi, hi = x.clone().requires_grad_(), h0.clone().requires_grad_()
            out, h_n, gates = m(xi, lengths, hi, return_gates=True)
            loss = (out * go).sum() + (h_n * gh).sum()
            grads = torch.autograd.grad(loss, [xi, hi, *m.parameters()])
            results.append([t.detach() for t in (out, h_n, gates["z"], gates["r"], *grads)])
            # 2 directions, forward and backward (gates come from the forward's outputs)
            assert len(launches) == (4 if path == "persistent" else 0), (cell, path, len(launches))
        err = max(float((a - b).abs().max()) for a, b in zip(*results, strict=True))
        print(cell, "max error", err)
        assert err < 1e-5, (cell, err)
    with torch.no_grad():  # the self-check must work from an eval loop too
        assert gru_persistent.self_check(torch.device("cpu"))
    """
)


def test_layer_matches_the_step_loops_in_triton_interpreter():
    """Both directions, empty rows, h0 and gates: outputs, final states, gates and every gradient within
    1e-5 of the step loops' (float32 both), and the kernels really ran (4 launches)."""
    proc = run_interpreted(LAYER_SCRIPT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "torch max error" in proc.stdout and "cho2014 max error" in proc.stdout


def test_self_check_fails_on_a_wrong_kernel_in_triton_interpreter():
    """The self-check compares against the step loops: a kernel with a wrong sign is caught (the
    layer would then run the loops), so a broken toolchain costs speed, never correctness."""
    script = textwrap.dedent(
        """
        import warnings
        import torch
        from gru_mm.nn import gru_persistent as gp

        real = gp._launch
        def wrong(kernel, plan, hidden, phases, reverse, *tensors):
            real(kernel, plan, hidden, phases, reverse, *tensors)
            if kernel is gp._cho_fwd:
                tensors[2].neg_()  # the outputs, h0 rows included
        gp._launch = wrong
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert not gp.self_check(torch.device("cpu"))
        assert any("ChoPersistent: max error" in str(w.message) for w in seen), [str(w.message) for w in seen]
        """
    )
    proc = run_interpreted(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_path_falls_back_to_the_step_loop_without_a_kernel():
    """On the CPU without the interpreter "persistent" runs the exact step loop: same results."""
    from gru_mm.nn import GRU, gru_persistent

    assert not gru_persistent.available(torch.device("cpu")) or gru_persistent.interpreted()
    torch.manual_seed(1)
    for cell in ("torch", "cho2014"):
        m = GRU(4, 8, cell=cell, path="persistent")
        x, lengths = torch.randn(3, 5, 4), torch.tensor([5, 2, 0])
        assert m.choose_path(lengths) == "persistent"
        out = m(x, lengths)[0]
        m.path = "auto"
        assert torch.equal(out, m(x, lengths)[0])


def test_cho2014_rejects_paths_of_the_torch_cell():
    from gru_mm.nn import GRU

    with pytest.raises(ValueError, match="cell 'cho2014' takes"):
        GRU(4, 8, cell="cho2014", path="packed")


@pytest.mark.parametrize(
    ("kernel", "hp"),
    [(k, 512) for k in ("_torch_fwd", "_torch_bwd", "_cho_fwd", "_cho_bwd")]
    + [("_torch_fwd", 128)],  # where 4 warps spilled registers
)
def test_kernels_compile_for_h100_with_the_grid_barrier(kernel, hp, tmp_path):
    """Ahead-of-time compile to sm_90 with the barrier, at the largest hidden size allowed (and 128):
    the barrier is one thread's acquire/release atomics per program; a program's shared memory fits
    an H100 (227 KB), which is what bounds MAX_HIDDEN; and ptxas assembles it without register spills
    at the launch's warp count."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from gru_mm.nn import gru_persistent as gp

    fn = getattr(gp, kernel)
    names = list(inspect.signature(fn.fn).parameters)
    consts = {
        "BB": gp.BLOCK_B, "BH": 16, "HP": hp, "PREC": "ieee", "GRID_SYNC": True,
        "MAX_SPINS": gp.MAX_SPINS, "PHASES": 7,
    }  # fmt: skip
    consts = {k: v for k, v in consts.items() if k in names}
    sig = {}
    for n in names:
        if n in consts:
            sig[n] = "constexpr"
        elif n in ("T0", "T1", "B0", "BMAX", "H"):
            sig[n] = "i32"
        else:
            sig[n] = "*i32" if n in ("OFF", "NB", "SYNC", "ERR") else "*fp32"
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    options = {"num_warps": gp.num_warps(hp), "launch_cooperative_grid": True}  # as _launch runs it
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    ptx = compiled.asm["ptx"]
    barriers = 1 if kernel.startswith("_torch") else 2
    assert ptx.count("atom.global.gpu.acq_rel.add") == barriers
    assert "ld.global.gpu.acquire" in ptx  # the spin reads the counter with acquire semantics
    assert compiled.metadata.shared <= 227 * 1024, compiled.metadata.shared
    assert compiled.metadata.launch_cooperative_grid
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if os.path.exists(ptxas):
        src_file = tmp_path / "k.ptx"
        src_file.write_text(ptx)
        cmd = [ptxas, "-arch=sm_90a", "-v", str(src_file), "-o", str(tmp_path / "k.cubin")]
        report = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stderr
        assert "0 bytes spill stores, 0 bytes spill loads" in report, report


@pytest.mark.gpu
@CUDA
def test_kernels_pass_their_self_check_on_cuda_with_the_barrier():
    from gru_mm.nn import gru_persistent

    assert gru_persistent.self_check(torch.device("cuda"), grid_sync=True), "see the warning"
    assert gru_persistent.self_check(torch.device("cuda"), grid_sync=False), "see the warning"
