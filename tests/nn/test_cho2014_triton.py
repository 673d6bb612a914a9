"""The cho2014 Triton kernel, run by Triton's CPU interpreter (in a subprocess: TRITON_INTERPRET
must be set before triton is imported), against the step loop; and on CUDA when there is one."""

import textwrap

import pytest
import torch
from nn_testlib import run_interpreted

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import torch

    from gru_mm.nn import GRU
    from gru_mm.nn import gru as gru_module

    torch.manual_seed(0)
    B, T, F, H = 19, 6, 5, 20  # B > one block, H not a multiple of the tile, empty rows
    lengths = torch.tensor([6, 0, 3, 1, 6, 2, 5, 0, 4, 4, 1, 6, 3, 2, 2, 5, 1, 6, 3])
    m = GRU(F, H, num_layers=2, bidirectional=True, cell="cho2014")
    x = torch.randn(B, T, F)
    h0 = torch.randn(4, B, H)
    go, gh = torch.randn(B, T, 2 * H), torch.randn(4, B, H)
    results = []
    for use in (False, True):
        gru_module._use_triton = lambda *a, use=use: use
        xi, hi = x.clone().requires_grad_(), h0.clone().requires_grad_()
        out, h_n, gates = m(xi, lengths, hi, return_gates=True)
        loss = (out * go).sum() + (h_n * gh).sum()
        grads = torch.autograd.grad(loss, [xi, hi, *m.parameters()])
        results.append([out, h_n, gates["z"], gates["r"], *grads])
    err = max(float((a - b).abs().max()) for a, b in zip(*results))
    print("max error", err)
    assert err < 1e-5, err

    from gru_mm.nn import cho2014_triton

    with torch.no_grad():  # the self-check must work from an eval loop too
        assert cho2014_triton._self_check(torch.device("cpu"))
    """
)


def test_kernel_in_triton_interpreter():
    proc = run_interpreted(SCRIPT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kernel_passes_its_self_check_on_cuda():
    from gru_mm.nn import cho2014_triton

    assert cho2014_triton.available(torch.device("cuda")), "self-check failed: see the warning"


@pytest.mark.parametrize("kernel", ["_fwd_kernel", "_bwd_kernel"])
def test_kernels_compile_for_h100_without_a_gpu(kernel):
    """Ahead-of-time compile to sm_90 (Triton ships ptxas): catches front-end and PTX errors here."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from gru_mm.nn import cho2014_triton as ct

    fn = getattr(ct, kernel)
    names = list(inspect.signature(fn.fn).parameters)
    consts = {"BB": ct.BLOCK_B, "BK": 64, "BN": 64, "PREC": "ieee"}
    sig = {}
    for n in names:
        if n in consts:
            sig[n] = "constexpr"
        elif n in ("B", "T_MAX", "H"):
            sig[n] = "i32"
        else:
            sig[n] = "*i32" if n == "LENS" else "*fp32"
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    assert "ptx" in compiled.asm
