"""gru_mm.nn.GRU: API contract, errors, empty sequences, precision, initialisers, planning."""

import numpy as np
import pytest
import torch
from nn_testlib import CUDA, DEVICES, no_tf32  # noqa: F401  (no_tf32: an autouse fixture, TF32 off)
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gru_mm.nn import GRU
from gru_mm.nn.gru_plan import StepCost, plan_segments
from gru_mm.nn.init import l2_penalty, weight_group

CONFIGS = [("torch", p) for p in ("auto", "padded_gather", "segments", "packed", "scan")] + [
    ("cho2014", "auto")
]


@pytest.mark.parametrize(
    "lengths, match",
    [
        (torch.tensor([3, 6]), r"0\.\.5"),
        (torch.tensor([-1, 2]), r"0\.\.5"),
        (torch.tensor([3.0, 2.0]), "integers"),
        ([3.0, 2.5], "integers"),
        (torch.tensor([True, False]), "integers"),
        (torch.tensor([3, 2, 1]), "batch size is 2"),
        (torch.tensor([[3, 2]]), "batch size is 2"),
        (None, "needs `lengths`"),
    ],
)
def test_bad_lengths_raise_value_error(lengths, match):
    m = GRU(3, 4)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(2, 5, 3), lengths)


@CUDA
@pytest.mark.gpu  # scripts/gpu_gru_check.sh runs the tests marked gpu
def test_lengths_on_cuda_are_refused():
    with pytest.raises(ValueError, match="on the CPU"):
        GRU(3, 4).cuda()(torch.randn(2, 5, 3, device="cuda"), torch.tensor([1, 2], device="cuda"))


def test_other_bad_inputs():
    m = GRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="h0 must have shape"):
        m(torch.randn(2, 5, 3), torch.tensor([1, 2]), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"\[B, T, 3\]"):
        m(torch.randn(2, 5, 7), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="cell"):
        GRU(3, 4, cell="lstm")
    with pytest.raises(ValueError, match="path"):
        GRU(3, 4, cell="cho2014", path="packed")
    with pytest.raises(ValueError, match="hidden_size"):
        GRU(3, 0)
    with pytest.raises(ValueError, match="dropout"):
        GRU(3, 4, dropout=1.5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell, path", CONFIGS)
def test_empty_sequences_are_legal(cell, path, device):
    torch.manual_seed(0)
    m = GRU(3, 4, num_layers=2, bidirectional=True, cell=cell, path=path).to(device)
    for lengths in ([0, 4, 0, 2], [0, 0, 0, 0]):
        x = torch.randn(4, 5, 3, device=device, requires_grad=True)
        h0 = torch.randn(4, 4, 4, device=device, requires_grad=True)
        out, h_n = m(x, torch.tensor(lengths), h0)
        assert torch.all(out[torch.tensor(lengths) == 0] == 0)
        torch.testing.assert_close(h_n[:, 0], h0[:, 0])
        (out.sum() + h_n.sum()).backward()
        grads = [x.grad, h0.grad, *(p.grad for p in m.parameters())]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        m.zero_grad()
        out, h_n = m(x.detach(), torch.tensor(lengths))  # default h0 is zeros
        assert torch.all(h_n[:, 0] == 0) and torch.isfinite(out).all()


@pytest.mark.parametrize("cell, path", CONFIGS)
def test_non_finite_padding_does_not_leak(cell, path):
    m = GRU(3, 4, bidirectional=True, cell=cell, path=path)
    x = torch.randn(2, 5, 3)
    x[1, 2:] = float("nan")
    x.requires_grad_()
    out, h_n = m(x, torch.tensor([5, 2]))
    (out.sum() + h_n.sum()).backward()
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all() and torch.isfinite(x.grad[:, :2]).all()


def test_return_sequences_and_state_flags():
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    out, h = GRU(3, 4, return_sequences=False)(x, lengths)
    assert out is None and h.shape == (1, 2, 4)
    out, h = GRU(3, 4, return_state=False)(x, lengths)
    assert h is None and out.shape == (2, 5, 4)


def test_state_dict_loads_both_ways_with_nn_gru():
    ours = GRU(3, 4, num_layers=2, bidirectional=True)
    ref = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    ours.load_state_dict(ref.state_dict())
    ref.load_state_dict(GRU(3, 4, num_layers=2, bidirectional=True).state_dict())


def test_packed_input_and_time_major():
    torch.manual_seed(0)
    m = GRU(3, 4, bidirectional=True)
    x, lengths = torch.randn(3, 6, 3), torch.tensor([2, 6, 4])
    out, h = m(x, lengths)
    pout, ph = m(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    torch.testing.assert_close(pad_packed_sequence(pout, batch_first=True)[0], out)
    torch.testing.assert_close(ph, h)
    tm = GRU(3, 4, bidirectional=True, batch_first=False)
    tm.load_state_dict(m.state_dict())
    tout, th = tm(x.transpose(0, 1), lengths)
    torch.testing.assert_close(tout.transpose(0, 1), out)
    torch.testing.assert_close(th, h)


@pytest.mark.parametrize("cell", ["torch", "cho2014"])
def test_precision_float32_ignores_autocast(cell):
    m = GRU(3, 4, cell=cell)
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    ref, _ = m(x, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h = m(x, lengths)
    assert out.dtype == torch.float32 and h.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_dropout_between_layers_only_in_training():
    m = GRU(3, 8, num_layers=2, dropout=0.5)
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    m.eval()
    torch.testing.assert_close(m(x, lengths)[0], m(x, lengths)[0])
    m.train()
    torch.manual_seed(0)
    a = m(x, lengths)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, m(x, lengths)[0])


def test_eval_under_no_grad_and_double():
    m = GRU(3, 4, num_layers=2).double().eval()
    with torch.no_grad():
        out, h = m(torch.randn(2, 5, 3, dtype=torch.float64), torch.tensor([5, 1]))
    assert out.dtype == torch.float64 and not out.requires_grad


@pytest.mark.parametrize("cell", ["torch", "cho2014"])
def test_keras_init_and_l2(cell):
    torch.manual_seed(0)
    m = GRU(
        5,
        6,
        num_layers=2,
        cell=cell,
        init="keras",
        l2_input_kernel=0.1,
        l2_recurrent_kernel=0.01,
        l2_bias=1.0,
    )
    for name, p in m.named_parameters():
        group = weight_group(name)
        if group == "bias":
            assert torch.all(p == 0)
        elif group == "recurrent_kernel":
            torch.testing.assert_close(p.t() @ p, torch.eye(6), atol=1e-5, rtol=0)
        else:
            bound = (6.0 / (p.shape[0] + p.shape[1])) ** 0.5
            assert p.abs().max() <= bound
    expected = sum(
        {"input_kernel": 0.1, "recurrent_kernel": 0.01, "bias": 1.0}[weight_group(n)] * (p**2).sum()
        for n, p in m.named_parameters()
    )
    torch.testing.assert_close(m.regularization_loss(), expected)
    torch.testing.assert_close(l2_penalty(m), torch.tensor(0.0))
    with pytest.raises(ValueError, match="finite number"):
        l2_penalty(m, bias=-1.0)


def test_plan_segments_covers_every_step():
    lens = np.array([300, 280, 120, 90, 40, 40, 10, 0])
    spans = plan_segments(lens, StepCost(1.0, 1.0, 5.0))
    assert spans[0][0] == 0 and spans[-1][1] == 300
    for (_, a1, na), (b0, _, nb) in zip(spans, spans[1:], strict=False):
        assert a1 == b0 and na >= nb
    for t0, _, n in spans:
        assert n == int((lens > t0).sum())
    assert plan_segments(np.array([0, 0]), StepCost(1.0, 1.0, 5.0)) == []


def test_choose_path():
    skewed = torch.tensor([1500] + [100] * 127)
    assert GRU(128, 512).choose_path(skewed, "cpu") == "scan"
    assert GRU(128, 64).choose_path(skewed, "cuda") == "segments"
    assert GRU(128, 512).choose_path(skewed, "cuda") == "packed"  # gru_plan.packed_wins
    mild = torch.tensor([1500] * 64 + [1400] * 64)
    assert GRU(80, 64).choose_path(mild, "cuda") == "padded_gather"
    assert GRU(128, 512).choose_path(torch.tensor([50] * 8), "cuda") == "padded_gather"
    assert GRU(128, 512, path="packed").choose_path(skewed, "cuda") == "packed"
    assert GRU(8, 8, cell="cho2014").choose_path(skewed) == "cho2014"


@pytest.mark.parametrize("path", ["padded_gather", "segments", "packed"])
def test_kernel_calls_meet_cudnn_rules_on_cpu(monkeypatch, path):
    """cuDNN rejects a non-contiguous hx and cannot run backward after a train=False call; the CPU
    kernel accepts both, so check our calls here, where the CI runs."""
    real, calls = torch.gru, []

    def strict(*args):
        packed = args[1].dim() == 1
        hx, train = (args[2], args[7]) if packed else (args[1], args[6])
        assert hx.is_contiguous()
        assert train or not torch.is_grad_enabled()
        calls.append("packed" if packed else "padded")
        return real(*args)

    monkeypatch.setattr(torch, "gru", strict)
    m = GRU(3, 4, num_layers=2, bidirectional=True, path=path).eval()
    lengths = torch.tensor([7, 3, 0, 5, 1, 7])
    h0 = torch.randn(6, 4, 4).transpose(0, 1)  # non-contiguous on purpose
    x = torch.randn(6, 7, 3, requires_grad=True)
    out, h_n = m(x, lengths, h0)
    (out.sum() + h_n.sum()).backward()
    with torch.no_grad():
        m(x, lengths)
    # the spy saw every kernel call of both forwards: packed runs all 4 (layer, direction)s in one
    # call, padded_gather one call each, segments at least one each
    if path == "packed":
        assert calls == ["packed"] * 2
    elif path == "padded_gather":
        assert calls == ["padded"] * 8
    else:
        assert len(calls) >= 8 and set(calls) == {"padded"}
