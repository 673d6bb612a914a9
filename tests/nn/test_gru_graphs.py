"""GRU(graphs=True): T buckets, device-side index maps, eager fallback off CUDA; on CUDA, graph replay
equals the same eager call, one capture serves every length set of a (B, bucket), gradients stay
correct. The CUDA tests carry "cuda" in their names and the gpu marker (scripts/gpu_gru_check.sh)."""

import copy
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nn_testlib import CUDA, no_tf32  # noqa: F401  (no_tf32: an autouse fixture, TF32 off)

from gru_mm.nn import GRU, gru_graphs
from gru_mm.nn.gru_graphs import EAGER_CALLS, bucket_steps
from gru_mm.nn.gru_layout import DeviceLayout, DeviceMaps, Layout
from gru_mm.nn.gru_paths import run_padded

GPU = [pytest.mark.gpu, CUDA]


def test_buckets_keep_four_significant_bits():
    assert [bucket_steps(n) for n in (1, 7, 15, 16, 17, 100, 400, 1500)] == [1, 7, 15, 16, 18, 104, 416, 1536]
    for n in range(1, 5000):
        b = bucket_steps(n)
        assert (
            n <= b <= 1.125 * n and bucket_steps(b) == b
        )  # at most 12.5 % padding; buckets are fixed points
    # eight buckets per octave above 16
    assert len({bucket_steps(n) for n in range(257, 513)}) == 8


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 20), min_size=1, max_size=9),
    extra=st.integers(0, 5),
    reverse=st.booleans(),
)
def test_device_maps_equal_the_host_built_maps(lengths, extra, reverse):
    """The graphs' maps, computed from a lengths tensor (here on the CPU), against PaddedMaps."""
    lens = np.array(lengths, dtype=np.int64)
    if lens.max() == 0:
        lens[0] = 1
    B, Tm = len(lens), int(lens.max())
    steps = bucket_steps(Tm) + extra
    host = Layout(torch.from_numpy(lens), steps, torch.device("cpu")).padded_maps(sort=False, reverse=reverse)
    dev = DeviceLayout(torch.from_numpy(lens), steps).padded_maps(sort=False, reverse=reverse)
    assert isinstance(dev, DeviceMaps) and dev.perm is None and dev.inv_perm is None
    assert dev.mask_tm.shape == (steps, B, 1) and dev.mask_bm.shape == (B, steps, 1)
    assert torch.equal(dev.mask_tm[:Tm], host.mask_tm) and not dev.mask_tm[Tm:].any()
    assert torch.equal(dev.mask_bm[:, :Tm], host.mask_bm) and not dev.mask_bm[:, Tm:].any()
    assert dev.mask_bm.is_contiguous()  # where() lays the output out like it, as in eager
    assert torch.equal(dev.end, host.end)
    assert torch.equal(dev.empty[:, 0], torch.from_numpy(lens == 0))
    if host.empty is not None:
        assert torch.equal(dev.empty, host.empty)
    if reverse:
        assert torch.equal(dev.rev[: Tm * B], host.rev)
        assert torch.equal(dev.rev[Tm * B :], torch.arange(Tm * B, steps * B))  # padding maps to itself
    else:
        assert dev.rev is None


def _grads(model, x, lengths, h0, go_seed=0):
    """(out, h_n, dx, dh0, *dweights) of one fwd+bwd with fixed random output gradients."""
    xi = x.clone().requires_grad_()
    hi = None if h0 is None else h0.clone().requires_grad_()
    out, h_n = model(xi, lengths, hi)
    g = torch.Generator(device=x.device).manual_seed(go_seed)
    go = torch.randn(out.shape, generator=g, device=x.device, dtype=x.dtype)
    gh = torch.randn(h_n.shape, generator=g, device=x.device, dtype=x.dtype)
    inputs = [xi, *([hi] if hi is not None else []), *model.parameters()]
    grads = torch.autograd.grad((out * go).sum() + (h_n * gh).sum(), inputs)
    return [out.detach(), h_n.detach(), *grads]


@pytest.mark.parametrize("layers, bidirectional, with_h0", [(1, False, False), (2, True, True)])
def test_padded_path_over_a_device_layout_equals_eager_on_cpu(layers, bidirectional, with_h0):
    """run_padded at the bucket's length with device-built maps (the graphs' function) gives the
    eager path's results: padding to the bucket changes nothing (float64, CPU)."""
    torch.manual_seed(0)
    m = GRU(5, 6, layers, bidirectional=bidirectional, path="padded_gather").double()
    lengths = torch.tensor([9, 0, 3, 17, 1])
    steps = bucket_steps(17)  # 18
    x = torch.randn(5, 17, 5, dtype=torch.float64)
    h0 = torch.randn(layers * (2 if bidirectional else 1), 5, 6, dtype=torch.float64) if with_h0 else None
    want = _grads(m, x, lengths, h0)

    class Bucketed(torch.nn.Module):  # the graphs' eager twin: x padded to the bucket, maps from a tensor
        def parameters(self, recurse=True):
            return m.parameters()

        def forward(self, xi, lens, hi):
            xb = torch.nn.functional.pad(xi, (0, 0, 0, steps - xi.shape[1]))
            out, h_n = run_padded(m._stack(), xb, DeviceLayout(lens, steps), hi, None)
            return out[:, : xi.shape[1]], h_n

    got = _grads(Bucketed(), x, lengths, h0)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_graphs_on_cpu_run_eager_and_equal_graphs_off():
    torch.manual_seed(0)
    on = GRU(4, 5, 2, bidirectional=True, graphs=True)
    off = GRU(4, 5, 2, bidirectional=True)
    off.load_state_dict(on.state_dict())
    x, lengths = torch.randn(3, 7, 4), torch.tensor([7, 2, 0])
    for _ in range(EAGER_CALLS + 2):  # past the warm-up calls: still eager off CUDA
        for a, b in zip(_grads(on, x, lengths, None), _grads(off, x, lengths, None), strict=True):
            assert torch.equal(a, b)
    assert on._graph_cache.captures == 0 and on._graph_cache.replays == 0
    assert "graphs=True" in repr(on)


def test_copies_and_pickles_start_without_graphs():
    m = GRU(3, 4, graphs=True)
    m._graph_cache.seen[("some", "shape")] = 1
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert other.graphs and other._graph_cache is not m._graph_cache and not other._graph_cache.seen


# ---- graphs on CUDA, and on the CPU through a stand-in capturer ----


class _FakeGraph:
    """Replay re-runs the captured function and writes its results into the capture's tensors: the
    data flow of a CUDA graph (static inputs read, static outputs overwritten), without a GPU."""

    def __init__(self, fn, result):
        self.fn, self.result, self.grad_mode = fn, result, torch.is_grad_enabled()

    def replay(self):
        with torch.set_grad_enabled(self.grad_mode):
            new = self.fn()
        with torch.no_grad():
            for old, now in zip(self.result, new, strict=True):
                if old is not None:
                    old.detach().copy_(now)


class _FakeCapturer:
    def usable(self, x):
        return x.device.type == "cpu"

    def warm_up(self, fn, iters):
        for _ in range(iters):
            fn()

    def new_pool(self):
        return None

    def capture(self, fn, pool):
        result = fn()
        return _FakeGraph(fn, result), result

    def host_lengths(self, lengths):
        return lengths


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=GPU)])
def device(request, monkeypatch):
    """ "cuda": real CUDA graphs; "cpu": the same cache, buffers and autograd node over _FakeCapturer."""
    if request.param == "cpu":
        monkeypatch.setattr(gru_graphs, "CAPTURER", _FakeCapturer())
        monkeypatch.setattr(GRU, "_graphable", lambda self, x: self.cell == "torch")
    return request.param


def _lengths_in_one_bucket(batch, steps, n, seed=0):
    """n length sets whose longest lengths differ but share steps' bucket (x has `steps` steps)."""
    rng = np.random.default_rng(seed)
    low = steps
    while bucket_steps(low - 1) == bucket_steps(steps):
        low -= 1
    sets = []
    for _ in range(n):
        top = int(rng.integers(low, steps + 1))
        lens = rng.integers(0, top + 1, batch)
        lens[rng.integers(batch)] = top
        sets.append(torch.from_numpy(lens))
    assert len({bucket_steps(int(s.max())) for s in sets}) == 1
    return sets


def _bucketed_eager(m, steps):
    """The eager call a graph replays: run_padded over x padded to the bucket, maps from device lengths."""

    class Bucketed(torch.nn.Module):
        def parameters(self, recurse=True):
            return m.parameters()

        def forward(self, xi, lens, hi):
            xb = torch.nn.functional.pad(xi, (0, 0, 0, steps - xi.shape[1]))
            out, h_n = run_padded(m._stack(), xb, DeviceLayout(lens.to(xi.device), steps), hi, None)
            return out[:, : xi.shape[1]], h_n

    return Bucketed()


@pytest.mark.slow  # on the CPU: 20-60 s under load (ATen's CPU GRU dispatches per step)
@pytest.mark.parametrize("layers, bidirectional, with_h0", [(1, False, False), (2, True, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_graph_replay_equals_the_same_eager_call(device, layers, bidirectional, with_h0, dtype):
    torch.manual_seed(0)
    B, T, F, H = 5, 34, 6, 8  # T 34 -> bucket 36: the graph runs 2 steps more than x has
    m = GRU(F, H, layers, bidirectional=bidirectional, graphs=True).to(device, dtype)
    twin = _bucketed_eager(m, bucket_steps(T))
    D = 2 if bidirectional else 1
    sets = _lengths_in_one_bucket(B, T, 5)
    assert len({int(s.max()) for s in sets}) > 1  # new longest lengths, one graph
    for i, lengths in enumerate(sets):
        x = torch.randn(B, T, F, device=device, dtype=dtype)
        h0 = torch.randn(layers * D, B, H, device=device, dtype=dtype) if with_h0 else None
        got = _grads(m, x, lengths, h0, go_seed=i)
        want = _grads(twin, x, lengths, h0, go_seed=i)
        if i >= EAGER_CALLS:  # a replay: the same kernels as the eager call
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), f"length set {i}"
            # cuDNN's backward may reduce in another order from run to run: gradients to float rounding
            for a, b in zip(got[2:], want[2:], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        mask = (torch.arange(T)[None] < lengths[:, None]).to(device)
        assert not got[0][~mask].any()  # padding stays zero
    assert m._graph_cache.captures == 1 and m._graph_cache.replays == 5 - EAGER_CALLS


def test_graphs_are_captured_once_per_shape(device):
    torch.manual_seed(0)
    m = GRU(4, 8, graphs=True).to(device)
    cache = m._graph_cache
    x = torch.randn(5, 40, 4, device=device, requires_grad=True)
    for lengths in _lengths_in_one_bucket(5, 40, 4):  # 40 -> bucket 40 (37..40)
        out, h = m(x, lengths)
        (out.sum() + h.sum()).backward()
    assert (cache.captures, cache.replays) == (1, 4 - EAGER_CALLS)
    short = torch.tensor([20, 3, 0, 11, 9])  # another bucket (20)
    for _ in range(EAGER_CALLS + 2):
        out, h = m(x, short)
        (out.sum() + h.sum()).backward()
        assert out.shape == (5, 40, 8) and not out[:, 20:].any()
    assert (cache.captures, cache.replays) == (2, 4 - EAGER_CALLS + 2)
    with torch.no_grad():  # no gradient: a forward-only graph of its own
        for _ in range(EAGER_CALLS + 1):
            m(x, short)
    assert cache.captures == 3
    m.double().float()  # new parameter tensors: the graphs that read the old ones are dropped
    assert not cache.graphs


def test_graph_gradients_accumulate_and_outputs_persist(device):
    """Two backward passes without zero_grad add up (no .grad aliases a graph's buffer), and an
    output kept from one call is not overwritten by the next replay."""
    torch.manual_seed(0)  # float64: the eager reference may run another path (summation order)
    m = GRU(4, 8, bidirectional=True, graphs=True).to(device, torch.float64)
    ref = GRU(4, 8, bidirectional=True).to(device, torch.float64)
    ref.load_state_dict(m.state_dict())
    sets = _lengths_in_one_bucket(3, 24, 3)
    xs = [torch.randn(3, 24, 4, device=device, dtype=torch.float64) for _ in sets]
    m(xs[0], sets[0])[0].sum().backward()  # the eager warm-up call
    m.zero_grad()
    kept = []
    for model in (m, ref):
        for x, lengths in zip(xs[1:], sets[1:], strict=True):
            out, h = model(x, lengths)
            (out.square().sum() + h.sum()).backward()
            if model is m:
                kept.append(out.detach())
    assert m._graph_cache.replays == 2
    torch.testing.assert_close(kept[0], ref(xs[1], sets[1])[0].detach(), rtol=1e-10, atol=1e-12)
    static = {t.data_ptr() for g in m._graph_cache.graphs.values() for t in g.grads if t is not None}
    for (name, p), q in zip(m.named_parameters(), ref.parameters(), strict=True):
        assert p.grad.data_ptr() not in static, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)


def test_second_call_before_backward_runs_eager(device):
    """A graphed call's saved state lives in the graph's memory: while its backward is due, the
    layer runs eagerly, so both backward passes are right."""
    torch.manual_seed(0)
    m = GRU(4, 8, graphs=True).to(device, torch.float64)
    ref = GRU(4, 8).to(device, torch.float64)
    ref.load_state_dict(m.state_dict())
    lengths = torch.tensor([10, 4, 7])
    x1, x2 = (torch.randn(3, 10, 4, device=device, dtype=torch.float64) for _ in range(2))
    for _ in range(EAGER_CALLS):
        m(x1, lengths)[0].sum().backward()
    m.zero_grad()
    replays = m._graph_cache.replays
    losses = [m(x, lengths)[0].square().sum() for x in (x1, x2)]  # the second one cannot replay
    assert m._graph_cache.replays == replays + 1
    sum(losses).backward()
    sum(ref(x, lengths)[0].square().sum() for x in (x1, x2)).backward()
    for p, q in zip(m.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)
    # with the first graph released, the layer replays again
    out, h = m(x2, lengths)
    out.sum().backward()
    assert m._graph_cache.replays == replays + 2


@pytest.mark.gpu
@CUDA
def test_cuda_graph_replays_do_not_synchronise():
    """After the capture, a replayed fwd+bwd makes no device sync (torch's sync debug mode is silent)."""
    import warnings

    m = GRU(8, 16, num_layers=2, bidirectional=True, graphs=True).cuda()
    x = torch.randn(6, 30, 8, device="cuda", requires_grad=True)
    sets = [torch.tensor([30, 3, 0, 17, 30, 1]), torch.tensor([29, 30, 4, 0, 1, 2])]
    for lengths in sets:  # eager, then the capture
        out, h = m(x, lengths)
        (out.sum() + h.sum()).backward()
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, h = m(x, sets[0])
            (out.sum() + h.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode(old)
    assert m._graph_cache.replays == 2
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert not syncs, syncs


def test_what_graphs_leave_to_eager(device):
    """Dropout between layers in training, gates, and more shapes than MAX_GRAPHS run eagerly."""
    torch.manual_seed(0)
    x, lengths = torch.randn(2, 6, 3, device=device), torch.tensor([6, 2])
    m = GRU(3, 4, num_layers=2, dropout=0.5, graphs=True).to(device)
    for _ in range(EAGER_CALLS + 2):
        m(x, lengths)[0].sum().backward()
    assert m._graph_cache.captures == 0  # training: random masks between the layers
    m.eval()
    for _ in range(EAGER_CALLS + 2):
        m(x, lengths)[0].sum().backward()
    assert m._graph_cache.captures == 1  # no dropout in eval mode
    for _ in range(EAGER_CALLS + 2):
        assert set(m.gates(x, lengths)) == {"z", "r"}
    assert m._graph_cache.captures == 1
    few = GRU(3, 4, graphs=True).to(device)
    old = gru_graphs.MAX_GRAPHS
    gru_graphs.MAX_GRAPHS = 2
    try:
        for steps in (2, 3, 4):  # three buckets, room for two graphs
            for _ in range(EAGER_CALLS + 1):
                few(x, torch.tensor([steps, 1]))[0].sum().backward()
    finally:
        gru_graphs.MAX_GRAPHS = old
    assert few._graph_cache.captures == 2


def test_auto_keeps_segments_eager_and_graphs_the_rest(device, monkeypatch):
    """Where auto picks segments (they skip GPU work on padding) the layer stays eager; where it picks
    packed or padded_gather, the padded path is graphed."""
    torch.manual_seed(0)
    m = GRU(3, 4, graphs=True).to(device)
    x, lengths = torch.randn(3, 8, 3, device=device), torch.tensor([8, 2, 1])
    for picked, captures in (("segments", 0), ("packed", 1)):
        spans = [(0, 2, 3), (2, 8, 1)] if picked == "segments" else None
        monkeypatch.setattr(m, "_resolve", lambda layout, device_type, p=picked, s=spans: (p, s))
        for _ in range(EAGER_CALLS + 2):
            m(x, lengths)[0].sum().backward()
        assert m._graph_cache.captures == captures, picked
