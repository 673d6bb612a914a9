"""gru_mm.nn.GRU (cell "torch") equals nn.GRU over pack_padded_sequence: outputs, h_n, all grads."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nn_testlib import CUDA, DEVICES, no_tf32  # noqa: F401  (no_tf32: an autouse fixture, TF32 off)
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gru_mm.nn import GRU

PATHS = ["auto", "padded_gather", "segments", "packed", "scan"]
# CPU: every result within 1e-5 relative of nn.GRU over pack_padded_sequence (ATen's padded and
# packed loops do the same float32 operations per row).
CPU_RTOL = 1e-5
# CUDA: cuDNN picks different algorithms, and so summation orders, for a padded and a packed call, so
# comparing two float32 kernels measures rounding, not logic. There the logic is checked in float64
# (to 1e-9 relative: a real mistake is O(1)), and float32 results are held to an error budget against
# a float64 truth (packed nn.GRU on the CPU): CUDA_BUDGET times packed nn.GRU's own float32 error on
# the same case, or CUDA_FLOOR relative, whichever is larger. Measured on an H100 (47 random cases,
# scripts/gpu_exact_budget.py): float64 errors <= 1.1e-15 on every path; float32 errors of the
# padded paths (cuDNN's padded kernels) p50 6.8e-6, max 1.8e-5, i.e. 57x (p50) to 187x (max) packed
# nn.GRU's own error, which is 1e-7..4e-7; hypothesis found 1.27e-5 (docs/benchmarks.md).
CUDA_F64_RTOL = 1e-9
CUDA_BUDGET = 50.0
CUDA_FLOOR = 5e-5


@st.composite
def gru_cases(draw):
    T = draw(st.integers(1, 12))
    B = draw(st.integers(1, 7))
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    if draw(st.booleans()):  # make sure 1 and T both occur now and then
        lengths[0] = T
        lengths[-1] = 1
    return {
        "T": T,
        "lengths": lengths,
        "F": draw(st.integers(1, 6)),
        "H": draw(st.integers(1, 8)),
        "L": draw(st.integers(1, 3)),
        "D": draw(st.sampled_from([1, 2])),
        "with_h0": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def rel_err(actual, expected):
    """Max abs error, relative to max(1, the largest expected magnitude)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not expected.numel():
        return 0.0
    scale = max(1.0, float(expected.abs().max()))
    return float((actual - expected).abs().max()) / scale


def close(actual, expected, what, rtol):
    err = rel_err(actual, expected)
    assert err <= rtol, f"{what}: max relative error {err:.3g} (rtol {rtol:g})"


def make_inputs(case, device, dtype):
    torch.manual_seed(case["seed"])
    T, F, H, L, D = case["T"], case["F"], case["H"], case["L"], case["D"]
    B = len(case["lengths"])
    ours = GRU(F, H, L, bidirectional=D == 2)  # weights drawn in float32 on the CPU, then moved
    x = torch.randn(B, T, F)
    h0 = torch.randn(L * D, B, H) if case["with_h0"] else None
    g_out = torch.randn(B, T, D * H)
    g_h = torch.randn(L * D, B, H)

    def on(t):
        return None if t is None else t.to(device, dtype)

    return ours.state_dict(), on(x), on(h0), on(g_out), on(g_h)


def run_ours(case, path, device, dtype):
    """gru_mm's results, after checking what must hold exactly (padding, empty rows)."""
    state, x, h0, g_out, g_h = make_inputs(case, device, dtype)
    T, F, H, L, D = case["T"], case["F"], case["H"], case["L"], case["D"]
    lengths = torch.tensor(case["lengths"], dtype=torch.int64)
    B = len(lengths)
    ours = GRU(F, H, L, bidirectional=D == 2, path=path)
    ours.load_state_dict(state)
    ours = ours.to(device, dtype)
    xa = x.clone().requires_grad_()
    ha = None if h0 is None else h0.clone().requires_grad_()
    out, h_n = ours(xa, lengths, ha)
    ((out * g_out).sum() + (h_n * g_h).sum()).backward()

    keep = lengths > 0
    kd = keep.to(device)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(device)
    rtol = CPU_RTOL
    assert out.shape == (B, T, D * H) and h_n.shape == (L * D, B, H)
    assert torch.all(out[~mask] == 0), "outputs must be zero at padded steps"
    h0_full = torch.zeros(L * D, B, H, device=device, dtype=dtype) if h0 is None else h0
    close(h_n[:, ~kd], h0_full[:, ~kd], "h_n of empty rows", rtol)
    if ha is not None:
        close(ha.grad[:, ~kd], g_h[:, ~kd], "dh0 of empty rows", rtol)
    if xa.grad is None:  # all rows empty: the input took no part
        xa.grad = torch.zeros_like(xa)
    close(xa.grad[~mask], torch.zeros_like(xa.grad[~mask]), "dx at padding", rtol)
    if not keep.any():
        for p in ours.parameters():
            assert p.grad is None or torch.all(p.grad == 0)
        return None
    results = {"outputs": out[kd], "h_n": h_n[:, kd], "dx": xa.grad[kd]}
    if ha is not None:
        results["dh0"] = ha.grad[:, kd]
    results.update({f"d{name}": p.grad for name, p in ours.named_parameters()})
    return results


def run_packed(case, device, dtype):
    """The reference: nn.GRU over pack_padded_sequence on the non-empty rows."""
    state, x, h0, g_out, g_h = make_inputs(case, device, dtype)
    T, F, H, L, D = case["T"], case["F"], case["H"], case["L"], case["D"]
    lengths = torch.tensor(case["lengths"], dtype=torch.int64)
    keep = lengths > 0
    kd = keep.to(device)
    ref = nn.GRU(F, H, L, batch_first=True, bidirectional=D == 2)
    ref.load_state_dict(state)
    ref = ref.to(device, dtype)
    xr = x[kd].clone().requires_grad_()
    hr = None if h0 is None else h0[:, kd].clone().requires_grad_()
    packed = pack_padded_sequence(xr, lengths[keep], batch_first=True, enforce_sorted=False)
    o, h = ref(packed, hr)
    o, _ = pad_packed_sequence(o, batch_first=True, total_length=T)
    ((o * g_out[kd]).sum() + (h * g_h[:, kd]).sum()).backward()
    results = {"outputs": o, "h_n": h, "dx": xr.grad}
    if hr is not None:
        results["dh0"] = hr.grad
    results.update({f"d{name}": p.grad for name, p in ref.named_parameters()})
    return results


def check_against_packed(case, path, device):
    if device == "cpu":
        ours = run_ours(case, path, "cpu", torch.float32)
        if ours is not None:
            ref = run_packed(case, "cpu", torch.float32)
            for what, value in ours.items():
                close(value, ref[what], what, CPU_RTOL)
        return
    # CUDA: the logic in float64, then float32 within its budget against a float64 truth
    ours64 = run_ours(case, path, device, torch.float64)
    if ours64 is None:
        return
    truth = run_packed(case, "cpu", torch.float64)
    for what, value in ours64.items():
        close(value, truth[what], f"{what} (float64)", CUDA_F64_RTOL)
    ours32 = run_ours(case, path, device, torch.float32)
    ref32 = run_packed(case, device, torch.float32)
    for what, value in ours32.items():
        ref_err = rel_err(ref32[what], truth[what])
        budget = max(CUDA_BUDGET * ref_err, CUDA_FLOOR)
        err = rel_err(value, truth[what])
        assert err <= budget, (
            f"{what}: float32 error {err:.3g} against float64 truth, over the budget {budget:.3g} "
            f"(packed nn.GRU's own float32 error {ref_err:.3g}, x{CUDA_BUDGET:g}, floor {CUDA_FLOOR:g})"
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=gru_cases())
def test_matches_packed_gru(case, path, device):
    check_against_packed(case, path, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("L,D", [(1, 1), (3, 2)])
def test_fixed_cases(path, device, L, D):
    # unsorted, duplicates, 1 and T, an empty row, with and without h0
    for with_h0 in (False, True):
        case = {
            "T": 11,
            "lengths": [4, 11, 1, 0, 11, 7, 4, 2],
            "F": 5,
            "H": 6,
            "L": L,
            "D": D,
            "with_h0": with_h0,
            "seed": 3,
        }
        check_against_packed(case, path, device)


@pytest.mark.parametrize("device", DEVICES)
def test_segments_on_a_long_skewed_batch(device):
    # many distinct lengths make several spans; lengths are log-normal as in the benchmark
    torch.manual_seed(0)
    lengths = torch.exp(torch.randn(24) * 0.8 + 3.0).round().clamp(1, 120).long().tolist()
    lengths[0] = 120
    case = {"T": 120, "lengths": lengths, "F": 8, "H": 16, "L": 2, "D": 2, "with_h0": True, "seed": 1}
    check_against_packed(case, "segments", device)
    check_against_packed(case, "auto", device)
