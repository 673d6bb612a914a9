"""Gates of torch's cell (cell="torch"): z and r of every real step equal a float64 NumPy
transcription of torch's equations, and asking for them changes no output."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nn_testlib import DEVICES, no_tf32, sigmoid  # noqa: F401  (no_tf32: an autouse fixture, TF32 off)

from gru_mm.nn import GRU


def numpy_torch_gru(m: GRU, x, lengths, h0):
    """Per sequence, per step: r, z, n, h' as torch.nn.GRU documents them, in float64."""
    B, T, _ = x.shape
    H, L, D = m.hidden_size, m.num_layers, m.num_directions
    p = {k: v.detach().cpu().double().numpy() for k, v in m.named_parameters()}
    inp = x.astype(np.float64)
    z_all, r_all = np.zeros((L * D, B, T, H)), np.zeros((L * D, B, T, H))
    for layer in range(L):
        outs = np.zeros((B, T, D * H))
        for d in range(D):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            W, U = p[f"weight_ih_{sfx}"], p[f"weight_hh_{sfx}"]
            bi, bh = p[f"bias_ih_{sfx}"], p[f"bias_hh_{sfx}"]
            g = layer * D + d
            for i in range(B):
                h = h0[g, i].astype(np.float64)
                for t in range(lengths[i]) if d == 0 else reversed(range(lengths[i])):
                    a, c = W @ inp[i, t] + bi, U @ h + bh
                    r = sigmoid(a[:H] + c[:H])
                    z = sigmoid(a[H : 2 * H] + c[H : 2 * H])
                    n = np.tanh(a[2 * H :] + r * c[2 * H :])
                    h = (1 - z) * n + z * h
                    outs[i, t, d * H : (d + 1) * H] = h
                    z_all[g, i, t], r_all[g, i, t] = z, r
        inp = outs
    return inp, z_all, r_all


@st.composite
def cases(draw):
    T = draw(st.integers(1, 7))
    B = draw(st.integers(1, 5))
    return {
        "T": T,
        "lengths": draw(st.lists(st.integers(0, T), min_size=B, max_size=B)),
        "F": draw(st.integers(1, 4)),
        "H": draw(st.integers(1, 5)),
        "L": draw(st.integers(1, 2)),
        "D": draw(st.sampled_from([1, 2])),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_torch_cell_gates_match_numpy(case, device):
    torch.manual_seed(case["seed"])
    T, F, H, L, D = case["T"], case["F"], case["H"], case["L"], case["D"]
    B = len(case["lengths"])
    m = GRU(F, H, L, bidirectional=D == 2).to(device).eval()
    x, h0 = torch.randn(B, T, F), torch.randn(L * D, B, H)
    lengths = torch.tensor(case["lengths"])
    out, h_n, gates = m(x.to(device), lengths, h0.to(device), return_gates=True)
    ro, rz, rr = numpy_torch_gru(m, x.double().numpy(), case["lengths"], h0.double().numpy())
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gates["z"].detach().cpu().double().numpy(), rz, **tol)
    np.testing.assert_allclose(gates["r"].detach().cpu().double().numpy(), rr, **tol)
    np.testing.assert_allclose(out.detach().cpu().double().numpy(), ro, **tol)
    plain_out, plain_h = m(x.to(device), lengths, h0.to(device))  # the layer's own path, no gates
    torch.testing.assert_close(out, plain_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_n, plain_h, rtol=1e-5, atol=1e-5)


def test_gates_method_and_padding():
    m = GRU(3, 4, bidirectional=True)
    lengths = torch.tensor([6, 2, 0])
    g = m.gates(torch.randn(3, 6, 3), lengths)
    assert g["z"].shape == g["r"].shape == (2, 3, 6, 4)
    assert torch.all(g["z"][:, 1, 2:] == 0) and torch.all(g["r"][:, 2] == 0)
    assert torch.all((g["z"][:, 0] > 0) & (g["z"][:, 0] < 1))
