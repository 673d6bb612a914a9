"""cell="cho2014" equals a float64 NumPy transcription of the four textbook equations."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nn_testlib import DEVICES, no_tf32, sigmoid  # noqa: F401  (no_tf32: an autouse fixture, TF32 off)

from gru_mm.nn import GRU
from gru_mm.nn.cho2014 import ChoScan, to_internal


def numpy_cho2014(m: GRU, x, lengths, h0):
    """Per sequence, per step, the four lines of Cho et al. (2014) in float64."""
    B, T, _ = x.shape
    H, L, D = m.hidden_size, m.num_layers, m.num_directions
    p = {k: v.detach().cpu().double().numpy() for k, v in m.named_parameters()}
    inp = x.astype(np.float64)
    h_n = np.zeros((L * D, B, H))
    z_all = np.zeros((L * D, B, T, H))
    r_all = np.zeros((L * D, B, T, H))
    for layer in range(L):
        outs = np.zeros((B, T, D * H))
        for d in range(D):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            W, U, b = p[f"weight_ih_{sfx}"], p[f"weight_hh_{sfx}"], p[f"bias_{sfx}"]
            Wz, Wr, Wc = W[:H], W[H : 2 * H], W[2 * H :]
            Uz, Ur, Uc = U[:H], U[H : 2 * H], U[2 * H :]
            bz, br, bc = b[:H], b[H : 2 * H], b[2 * H :]
            g = layer * D + d
            for i in range(B):
                h = h0[g, i].astype(np.float64)
                steps = range(lengths[i]) if d == 0 else reversed(range(lengths[i]))
                for t in steps:
                    xt = inp[i, t]
                    z = sigmoid(Uz @ h + Wz @ xt + bz)
                    r = sigmoid(Ur @ h + Wr @ xt + br)
                    c = np.tanh(Uc @ (r * h) + Wc @ xt + bc)
                    h = (1 - z) * h + z * c
                    outs[i, t, d * H : (d + 1) * H] = h
                    z_all[g, i, t], r_all[g, i, t] = z, r
                h_n[g, i] = h
        inp = outs
    return inp, h_n, z_all, r_all


@st.composite
def cases(draw):
    T = draw(st.integers(1, 8))
    B = draw(st.integers(1, 5))
    return {
        "T": T,
        "lengths": draw(st.lists(st.integers(0, T), min_size=B, max_size=B)),
        "F": draw(st.integers(1, 5)),
        "H": draw(st.integers(1, 6)),
        "L": draw(st.integers(1, 2)),
        "D": draw(st.sampled_from([1, 2])),
        "seed": draw(st.integers(0, 2**16)),
        "init": draw(st.sampled_from(["torch", "keras"])),
    }


def run_case(case, device, dtype=torch.float32):
    torch.manual_seed(case["seed"])
    T, F, H, L, D = case["T"], case["F"], case["H"], case["L"], case["D"]
    B = len(case["lengths"])
    m = GRU(F, H, L, bidirectional=D == 2, cell="cho2014", init=case["init"])
    if case["init"] == "keras":  # zero biases would leave the bias path untested
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.startswith("bias"):
                    p.uniform_(-0.5, 0.5)
    m = m.to(device, dtype)
    x = torch.randn(B, T, F, dtype=dtype)
    h0 = torch.randn(L * D, B, H, dtype=dtype)
    lengths = torch.tensor(case["lengths"], dtype=torch.int64)
    out, h_n, gates = m(x.to(device), lengths, h0.to(device), return_gates=True)
    ro, rh, rz, rr = numpy_cho2014(m, x.double().numpy(), case["lengths"], h0.double().numpy())
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.detach().cpu().double().numpy(), ro, **tol)
    np.testing.assert_allclose(h_n.detach().cpu().double().numpy(), rh, **tol)
    np.testing.assert_allclose(gates["z"].cpu().double().numpy(), rz, **tol)
    np.testing.assert_allclose(gates["r"].cpu().double().numpy(), rr, **tol)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_forward_matches_numpy(case, device):
    run_case(case, device)


def test_float64_matches_numpy_tightly():
    run_case(
        {"T": 9, "lengths": [9, 1, 0, 5, 9], "F": 3, "H": 4, "L": 2, "D": 2, "seed": 5, "init": "torch"},
        "cpu",
        torch.float64,
    )


def naive_torch_cho2014(m: GRU, x, lengths, h0):
    """Autograd reference: the same equations step by step with torch ops (for gradients)."""
    B, T, _ = x.shape
    H, L, D = m.hidden_size, m.num_layers, m.num_directions
    inp, finals = x, []
    for layer in range(L):
        outs = []
        for d in range(D):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            W, U, b = (getattr(m, f"{k}_{sfx}") for k in ("weight_ih", "weight_hh", "bias"))
            g = layer * D + d
            rows, last = [], []
            for i in range(B):
                h = h0[g, i]
                seq = [None] * T
                steps = range(int(lengths[i])) if d == 0 else reversed(range(int(lengths[i])))
                for t in steps:
                    a = W @ inp[i, t] + b
                    z = torch.sigmoid(a[:H] + U[:H] @ h)
                    r = torch.sigmoid(a[H : 2 * H] + U[H : 2 * H] @ h)
                    c = torch.tanh(a[2 * H :] + U[2 * H :] @ (r * h))
                    h = (1 - z) * h + z * c
                    seq[t] = h
                rows.append(torch.stack([s if s is not None else torch.zeros_like(h) for s in seq]))
                last.append(h)
            outs.append(torch.stack(rows))
            finals.append(torch.stack(last))
        inp = torch.cat(outs, -1)
    return inp, torch.stack(finals)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_autograd_reference(device):
    torch.manual_seed(0)
    B, T, F, H, L = 5, 7, 3, 4, 2
    lengths = torch.tensor([7, 2, 0, 7, 1])
    m = GRU(F, H, L, bidirectional=True, cell="cho2014").to(device, torch.float64)
    x = torch.randn(B, T, F, device=device, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L * 2, B, H, device=device, dtype=torch.float64, requires_grad=True)
    go = torch.randn(B, T, 2 * H, device=device, dtype=torch.float64)
    gh = torch.randn(L * 2, B, H, device=device, dtype=torch.float64)
    out, h_n = m(x, lengths, h0)
    ours = torch.autograd.grad((out * go).sum() + (h_n * gh).sum(), [x, h0, *m.parameters()])
    ro, rh = naive_torch_cho2014(m, x, lengths, h0)
    torch.testing.assert_close(out, ro)
    torch.testing.assert_close(h_n, rh)
    ref = torch.autograd.grad((ro * go).sum() + (rh * gh).sum(), [x, h0, *m.parameters()])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_scan_gradcheck():
    torch.manual_seed(1)
    H, bs = 3, [4, 4, 2, 1]
    n = sum(bs)
    pre = torch.randn(n, 3 * H, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(bs[0], H, dtype=torch.float64, requires_grad=True)
    u = torch.randn(3 * H, H, dtype=torch.float64, requires_grad=True)
    # previous packed row of every row at step >= 1 (sorted rows: sequence i at offset_t + i)
    offsets = [0, 4, 8, 10]
    prev = torch.tensor([offsets[t - 1] + i for t in range(1, 4) for i in range(bs[t])])
    assert torch.autograd.gradcheck(lambda p, h, w: ChoScan.apply(p, h, w, bs, prev)[0], (pre, h0, u))


def test_gate_order_is_z_r_candidate():
    w = torch.arange(6.0).repeat_interleave(1).view(6, 1)  # H = 2: z rows 0-1, r 2-3, c 4-5
    assert to_internal(w, 2).view(-1).tolist() == [4, 5, 0, 1, 2, 3]


def test_gates_are_zero_at_padding_and_api():
    m = GRU(3, 4, cell="cho2014")
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 0])
    g = m.gates(x, lengths)
    assert g["z"].shape == g["r"].shape == (1, 3, 6, 4)
    assert torch.all(g["z"][0, 1, 2:] == 0) and torch.all(g["r"][0, 2] == 0)
    assert torch.all((g["z"][0, 0] > 0) & (g["z"][0, 0] < 1))
