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
# Relative tolerance per device. CPU: 1e-5, the bound (ATen's padded and packed GRU loops
# do the same float32 operations per row). CUDA: 5e-5. cuDNN picks different algorithms (and so
# summation orders) for a padded and a packed call, and the H200 run (docs/gpu-2026-11-26-h200)
# measured 1.0e-5 to 1.4e-5 between them on multi-layer, bidirectional and tiny cases with TF32 off:
# float32 rounding accumulated over the layers and the backward, not a logic error, which would
# show up as O(1). 5e-5 leaves ~3.5x headroom over that and is still 1e4x below any real mistake.
RTOL = {"cpu": 1e-5, "cuda": 5e-5}


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


def close(actual, expected, what):
    actual, expected = actual.detach(), expected.detach()
    rtol = RTOL[actual.device.type]
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    err = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g}, rtol {rtol:g})"


def check_against_packed(case, path, device, dtype=torch.float32):
    torch.manual_seed(case["seed"])
    T, F, H, L, D = case["T"], case["F"], case["H"], case["L"], case["D"]
    lengths = torch.tensor(case["lengths"], dtype=torch.int64)
    B = len(lengths)
    ours = GRU(F, H, L, bidirectional=D == 2, path=path).to(device, dtype)
    ref = nn.GRU(F, H, L, batch_first=True, bidirectional=D == 2).to(device, dtype)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, F, device=device, dtype=dtype)
    h0 = torch.randn(L * D, B, H, device=device, dtype=dtype) if case["with_h0"] else None
    g_out = torch.randn(B, T, D * H, device=device, dtype=dtype)
    g_h = torch.randn(L * D, B, H, device=device, dtype=dtype)

    xa = x.clone().requires_grad_()
    ha = None if h0 is None else h0.clone().requires_grad_()
    out, h_n = ours(xa, lengths, ha)
    ((out * g_out).sum() + (h_n * g_h).sum()).backward()

    keep = lengths > 0
    kd = keep.to(device)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(device)
    assert out.shape == (B, T, D * H) and h_n.shape == (L * D, B, H)
    assert torch.all(out[~mask] == 0), "outputs must be zero at padded steps"
    h0_full = torch.zeros(L * D, B, H, device=device, dtype=dtype) if h0 is None else h0
    close(h_n[:, ~kd], h0_full[:, ~kd], "h_n of empty rows")
    if ha is not None:
        close(ha.grad[:, ~kd], g_h[:, ~kd], "dh0 of empty rows")
    if xa.grad is None:  # all rows empty: the input took no part
        xa.grad = torch.zeros_like(xa)
    close(xa.grad[~mask], torch.zeros_like(xa.grad[~mask]), "dx at padding")
    if not keep.any():
        for p in ours.parameters():
            assert p.grad is None or torch.all(p.grad == 0)
        return

    xr = x[kd].clone().requires_grad_()
    hr = None if h0 is None else h0[:, kd].clone().requires_grad_()
    packed = pack_padded_sequence(xr, lengths[keep], batch_first=True, enforce_sorted=False)
    o, h = ref(packed, hr)
    o, _ = pad_packed_sequence(o, batch_first=True, total_length=T)
    ((o * g_out[kd]).sum() + (h * g_h[:, kd]).sum()).backward()

    close(out[kd], o, "outputs")
    close(h_n[:, kd], h, "h_n")
    close(xa.grad[kd], xr.grad, "dx")
    if hr is not None:
        close(ha.grad[:, kd], hr.grad, "dh0")
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, ref_params[name].grad, f"d{name}")


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
