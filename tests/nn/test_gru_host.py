"""Host side of the CUDA paths: the index maps, the O(1) path decision, no device syncs."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nn_testlib import CUDA

from gru_mm.nn import GRU
from gru_mm.nn.gru_layout import Layout
from gru_mm.nn.gru_plan import (
    WIN_MARGIN,
    StepCost,
    cached_plan,
    plan_cost,
    plan_segments,
    segments_can_win,
    step_cost,
)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=7),
    extra=st.integers(0, 3),
    sort=st.booleans(),
    reverse=st.booleans(),
)
def test_padded_maps_match_a_direct_numpy_construction(lengths, extra, sort, reverse):
    lens = np.array(lengths, dtype=np.int64)
    if lens.max() == 0:
        lens[0] = 1
    T = int(lens.max()) + extra
    lay = Layout(torch.from_numpy(lens), T, torch.device("cpu"))
    maps = lay.padded_maps(sort=sort, reverse=reverse)
    B, Tm = len(lens), int(lens.max())
    order = np.argsort(-lens, kind="stable") if sort else np.arange(B)
    rl = lens[order]  # lengths in the rows' order
    t = np.arange(Tm)
    assert np.array_equal(maps.mask_tm.numpy(), (t[:, None] < rl[None, :])[:, :, None])
    assert np.array_equal(maps.mask_bm.numpy(), (t[None, :] < lens[:, None])[:, :, None])
    assert np.array_equal(maps.end.numpy(), np.maximum(rl - 1, 0) * B + np.arange(B))
    if (lens == 0).any():
        assert np.array_equal(maps.empty.numpy()[:, 0], rl == 0)
    else:
        assert maps.empty is None
    if reverse:
        src = np.array([[rl[b] - 1 - s if s < rl[b] else s for b in range(B)] for s in range(Tm)])
        assert np.array_equal(maps.rev.numpy(), (src * B + np.arange(B)).ravel())
    if sort:
        assert np.array_equal(maps.perm.numpy(), order)
        assert np.array_equal(order[maps.inv_perm.numpy()], np.arange(B))


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 400), min_size=2, max_size=40),
    a=st.floats(0.1, 50.0),
    c=st.floats(0.0, 1.0),
    s=st.floats(1.0, 500.0),
)
def test_o1_bound_never_hides_a_winning_plan(lengths, a, c, s):
    """segments_can_win is a lower bound: when it says no, the planner's plan would not win either."""
    lens = np.sort(np.array(lengths, dtype=np.int64))[::-1].copy()
    if lens[0] == 0:
        return
    cost = StepCost(a, c, s)
    B, Tm, total = len(lens), int(lens[0]), int(lens.sum())
    spans = plan_segments(lens, cost)
    wins = len(spans) > 1 and plan_cost(spans, cost) <= WIN_MARGIN * cost.span(Tm, B)
    if wins:
        assert segments_can_win(B, Tm, total, cost)


def test_plans_are_cached_per_lengths():
    lens = np.array([300, 280, 120, 90, 40, 40, 10, 0])
    cost = StepCost(1.0, 1.0, 5.0)
    first = cached_plan(lens, cost)
    assert first == plan_segments(lens, cost)
    assert cached_plan(lens.copy(), cost) is first  # a dict hit, no planning
    assert cached_plan(lens, StepCost(1.0, 1.0, 6.0)) is not first


def test_auto_on_cuda_skips_the_planner_where_segments_cannot_win(monkeypatch):
    import gru_mm.nn.gru_plan as gru_plan

    def no_planning(*args):
        raise AssertionError("the planner ran")

    monkeypatch.setattr(gru_plan, "cached_plan", no_planning)
    with pytest.raises(AssertionError, match="the planner ran"):  # the patch sits where the planner is called
        GRU(128, 64).choose_path(torch.tensor([1500] + [100] * 127), "cuda")
    rng = np.random.default_rng(0)
    lens = torch.from_numpy(rng.integers(300, 401, 64))  # mild padding
    for hidden in (64, 128, 256, 512, 1024):
        assert GRU(128, hidden).choose_path(lens, "cuda") == "padded_gather"
    # heavy padding at a large hidden size: cuDNN's per-step cost dominates there (H200 fit), so
    # cutting rows with segments cannot pay; torch's packed kernel skips them at no per-step cost
    heavy = torch.tensor([400] + [40] * 31)
    assert not segments_can_win(32, 400, 400 + 31 * 40, step_cost("cuda", 128, 512))
    assert GRU(128, 512).choose_path(heavy, "cuda") == "packed"


@pytest.mark.parametrize(
    ("hidden", "lengths", "path"),
    [
        (512, [400] + [40] * 31, "packed"),  # padded/real 7.8
        (1024, [400, 200, 100, 50], "packed"),  # 2.13
        (1024, [400, 380, 300, 250], "padded_gather"),  # 1.2: the padded call's cheaper rows win
        (256, [400] + [40] * 31, "padded_gather"),  # below 512: cuDNN's padded kernels are faster
        (64, [400] + [40] * 31, "segments"),  # small hidden: cutting padded rows pays there
    ],
)
def test_auto_on_cuda_takes_the_packed_kernel_from_hidden_512_with_much_padding(hidden, lengths, path):
    assert GRU(128, hidden).choose_path(torch.tensor(lengths), "cuda") == path
    assert GRU(128, hidden).choose_path(torch.tensor(lengths), "cpu") == "scan"  # the CPU: always scan


@pytest.mark.parametrize("path", ["padded_gather", "segments"])
def test_padded_paths_return_contiguous_batch_major_outputs(path):
    m = GRU(3, 4, num_layers=2, bidirectional=True, path=path)
    out, h_n = m(torch.randn(5, 9, 3), torch.tensor([9, 2, 0, 7, 4]))
    assert out.is_contiguous() and out.shape == (5, 9, 8) and h_n.is_contiguous()


@CUDA
@pytest.mark.gpu
@pytest.mark.parametrize("path", ["auto", "padded_gather", "segments", "packed"])
def test_cuda_paths_do_not_synchronise(path):
    """No .item(), nonzero() or blocking copy on the hot path: torch's sync debug mode is silent."""
    m = GRU(8, 16, num_layers=2, bidirectional=True, path=path).cuda()
    x = torch.randn(6, 30, 8, device="cuda", requires_grad=True)
    lengths = torch.tensor([30, 3, 0, 17, 30, 1])
    out, h = m(x, lengths)  # first call: cuDNN set-up, allocations
    (out.sum() + h.sum()).backward()
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, h = m(x, lengths)
            (out.sum() + h.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode(old)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert not syncs, syncs


def test_index_maps_made_under_inference_mode_serve_training_later():
    """The masks slice one cached arange; made under torch.inference_mode() (evaluation before
    training) it is an inference tensor, which autograd refuses to save: training must still work."""
    from gru_mm.nn import gru_layout

    gru_layout._ARANGES.clear()
    m = GRU(3, 4, bidirectional=True, path="padded_gather")
    x, lengths = torch.randn(3, 5000, 3), torch.tensor([5000, 7, 0])  # longer than the first arange
    with torch.inference_mode():
        m(x[:, :9], torch.tensor([9, 7, 0]))
    out, h = m(x.requires_grad_(), lengths)
    (out.sum() + h.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert m.weight_hh_l0.grad is not None


def test_cached_zero_states_made_under_inference_mode_serve_training_later():
    """Calls without h0 view one cached zero buffer as cuDNN's hx (no fill kernel). Autograd saves hx
    for the backward, so the buffer must not be an inference tensor even when inference came first;
    and it must stay zero."""
    from gru_mm.nn import gru_layout

    gru_layout._ZEROS.clear()
    m = GRU(3, 4, num_layers=2, bidirectional=True, path="padded_gather")
    x, lengths = torch.randn(3, 9, 3), torch.tensor([9, 7, 0])
    with torch.inference_mode():
        m(x, lengths)
    out, h = m(x.requires_grad_(), lengths)
    (out.sum() + h.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.equal(h[:, 2], torch.zeros(4, 4))  # an empty row keeps the (zero) initial state
    assert all(not z.is_inference() and not z.any() for zs in gru_layout._ZEROS.values() for z in zs)


@CUDA
@pytest.mark.gpu
def test_cuda_weights_share_one_buffer_per_layer_and_direction():
    """flatten_parameters (torch's private _cudnn_rnn_flatten_weight, behind gru_kernels) succeeds:
    each (layer, direction)'s weights view one buffer, so cuDNN neither copies nor warns."""
    m = GRU(8, 16, num_layers=2, bidirectional=True, path="padded_gather").cuda()
    assert m._flat
    for layer, suffix in ((0, ""), (0, "_reverse"), (1, ""), (1, "_reverse")):
        names = [f"{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        assert len({getattr(m, n).untyped_storage().data_ptr() for n in names}) == 1, names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, h = m(torch.randn(3, 5, 8, device="cuda", requires_grad=True), torch.tensor([5, 2, 0]))
        (out.sum() + h.sum()).backward()
    assert not [w for w in caught if "contiguous chunk" in str(w.message)]
