"""CUDA graphs for GRU's padded path: the host leaves the step (``GRU(..., graphs=True)``).

On a GPU the layer's fwd+bwd is host-bound at hidden <= 128 and cuDNN's RNN calls block the host,
so every microsecond of Python and dispatch adds to the step (issue 14). A CUDA graph replays the
whole padded_gather fwd (and bwd) as one launch each.

What a graph depends on: (B, T bucket, dtype, device, h0 given, which inputs need gradients, grad
mode, inference mode, TF32 flags); the layer setup is the module's own. The lengths are NOT part of
it: they are copied into a static device buffer and every index map is computed from it on the
device (``gru_layout.DeviceLayout``), so a new batch of other lengths in the same (B, bucket)
replays the same graph. x and h0 are copied into static buffers; outputs and gradients are cloned
out of the graph's memory (a later replay overwrites it).

T bucket (``bucket_steps``): the batch's longest length rounded up to keep 4 significant bits,
i.e. 8 buckets per octave (1..16 exact, then 18, 20, .., 32, 36, .., 400 -> 416, 1500 -> 1536): at
most 12.5 % extra steps, a handful of shapes per layer. The padded steps never change a result
(the forward direction is causal, the backward one starts at each true end, final states are
gathered at the true ends, padding is masked in and out), so the layer pads to the bucket itself.

Eager (the layer's usual path) stays the fallback: off CUDA, the first ``EAGER_CALLS`` calls of a
shape (warm-up; a shape seen once costs no capture), more than ``MAX_GRAPHS`` shapes per layer,
autocast left on (precision "autocast"), dropout between layers in training, inside another
capture or torch.compile, a DataParallel replica, and while a graphed call of this layer still
awaits its backward (its saved state lives in the graph's memory, which the next replay reuses).
Replay runs exactly the kernels of the same eager call at the bucket's length (``run_padded``
over a DeviceLayout), so its results equal that call's bit for bit.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gru_mm.nn.gru_layout import DeviceLayout
from gru_mm.nn.gru_paths import Stack, run_padded

MAX_GRAPHS = 16  # graphs per layer; each holds its activations' memory (a pool shared by the layer)
EAGER_CALLS = 1  # calls of a shape that run eagerly before it is captured
WARMUP_ITERS = 2  # untimed fwd+bwd on a side stream before capture (cuDNN/cuBLAS lazy set-up)


class CudaCapturer:
    """How graphs are made and fed: CUDA stream capture. The CPU tests put a stand-in in ``CAPTURER``
    whose replay re-runs the captured function into the same buffers, so that the cache, the
    buffers and the autograd node are tested without a GPU."""

    def usable(self, x: Tensor) -> bool:
        if torch.cuda.is_current_stream_capturing() or torch.compiler.is_compiling():
            return False  # inside another capture (or a compiled region) the eager ops get recorded there
        return x.device.index == torch.cuda.current_device()  # a replay runs on the current device

    def warm_up(self, fn, iters: int) -> None:
        """Run fn a few times on a side stream (cuDNN's and cuBLAS's lazy set-up stays out of the graph)."""
        torch.cuda.synchronize()
        with torch.cuda.stream(torch.cuda.Stream()):
            for _ in range(iters):
                fn()
        torch.cuda.synchronize()

    def new_pool(self):
        return torch.cuda.graph_pool_handle()

    def capture(self, fn, pool):
        """(graph, what fn returned): the result's memory is where each replay writes."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread may call CUDA meanwhile, which "global" forbids
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            result = fn()
        return graph, result

    def host_lengths(self, lengths: Tensor) -> Tensor:
        return lengths.pin_memory()  # so that the copy to the device is asynchronous


CAPTURER = CudaCapturer()


def bucket_steps(n: int) -> int:
    """The padded time size a graph runs for a longest length n: n rounded up to 4 significant bits."""
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


@dataclass(eq=False)
class _Pending:
    """Held by the autograd node of a graphed call: alive and not done = its backward is still due."""

    done: bool = False


@dataclass(eq=False)
class _Graph:
    fwd: torch.cuda.CUDAGraph
    bwd: torch.cuda.CUDAGraph | None
    x: Tensor  # [B, T bucket, F]
    lengths: Tensor  # [B] int64, device
    h0: Tensor | None
    out: Tensor  # [B, T bucket, D*H]
    h_n: Tensor
    grad_out: Tensor | None = None
    grad_h_n: Tensor | None = None
    grads: tuple[Tensor | None, ...] = ()  # for (x, h0, *weights)
    weight_ptrs: tuple[int, ...] = ()
    generation: int = 0  # bumped by each forward replay


@dataclass(eq=False)
class GraphCache:
    """One layer's graphs, keyed by shape; ``captures`` counts captures (tests, benchmarks)."""

    graphs: dict[tuple, _Graph] = field(default_factory=dict)
    seen: dict[tuple, int] = field(default_factory=dict)
    captures: int = 0
    replays: int = 0
    pool: tuple | None = None
    pending: weakref.ref | None = None
    failed: dict[tuple, str] = field(default_factory=dict)  # shapes whose capture raised: eager

    def __reduce__(self):  # copies and pickles of a layer start with no graphs
        return (GraphCache, ())

    def clear(self) -> None:
        self.graphs.clear()
        self.seen.clear()
        self.failed.clear()
        self.pending = None

    def run(self, stack: Stack, x: Tensor, lengths: Tensor, max_len: int, h0: Tensor | None):
        """(out [B, T, D*H], h_n) from a graph, or None: the caller runs eagerly.

        x: [B, T, F] contiguous, the layer's dtype, on CUDA; lengths: [B] int64 on the CPU.
        """
        if not CAPTURER.usable(x):
            return None
        weights = stack.all_weights()
        grad = torch.is_grad_enabled() and (
            x.requires_grad or (h0 is not None and h0.requires_grad) or any(w.requires_grad for w in weights)
        )
        if stack.dropout and stack.training and stack.num_layers > 1:
            return None  # dropout's random masks between layers (training mode, with or without grad): eager
        pending = self.pending() if self.pending is not None else None
        if pending is not None and not pending.done:
            # this layer's last graphed call still awaits its backward, and its saved state lives
            # in the memory every graph of this layer replays into
            return None
        needs = None
        if grad:
            h0_grad = h0 is not None and h0.requires_grad
            needs = (x.requires_grad, h0_grad, *(w.requires_grad for w in weights))
        steps = bucket_steps(max_len)
        key = (
            x.shape[0],
            steps,
            x.shape[2],
            x.dtype,
            x.device,
            h0 is not None,
            needs,
            torch.is_inference_mode_enabled(),
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        )
        graph = self.graphs.get(key)
        ptrs = tuple(w.data_ptr() for w in weights)
        if graph is not None and graph.weight_ptrs != ptrs:  # parameters replaced since the capture
            del self.graphs[key]
            graph = None
        if graph is None:
            seen = self.seen.get(key, 0)
            if seen < EAGER_CALLS or len(self.graphs) >= MAX_GRAPHS or key in self.failed:
                self.seen[key] = seen + 1
                return None
            try:
                graph = self._capture(stack, x, h0, steps, weights, needs)
            except Exception as e:  # e.g. an op that cannot be captured: this shape stays eager
                self.failed[key] = f"{type(e).__name__}: {e}"
                warnings.warn(
                    f"GRU graphs: capturing a CUDA graph failed, running eagerly: {e}. After a failed "
                    "capture torch 2.11 may refuse CUDA random numbers ('Offset increment outside graph "
                    "capture', seen on an H100); if so, run with graphs=False (model.gru.graphs=false)",
                    stacklevel=3,
                )
                return None
            graph.weight_ptrs = ptrs
            self.graphs[key] = graph
        self.replays += 1
        pinned = CAPTURER.host_lengths(lengths)
        if not grad:
            with torch.no_grad():
                _fill(graph, x, pinned, h0)
                graph.fwd.replay()
                return _copy_out(graph, x.shape[1])
        pending = _Pending()
        self.pending = weakref.ref(pending)
        return _Replay.apply(graph, pending, pinned, h0, x, *weights)

    def _capture(self, stack, x, h0, steps, weights, needs) -> _Graph:
        """Static buffers, a few warm-up runs on a side stream, then the fwd (and bwd) captures."""
        batch, device = x.shape[0], x.device
        # zeros, not empty: the warm-up runs on them
        static_x = torch.zeros(batch, steps, x.shape[2], dtype=x.dtype, device=device)
        static_len = torch.zeros(batch, dtype=torch.int64, device=device)
        static_h0 = None if h0 is None else torch.zeros_like(h0, memory_format=torch.contiguous_format)
        live: dict[str, object] = {}  # the forward's outputs and leaves, for the backward

        def forward() -> tuple[Tensor, Tensor]:
            # Fresh leaves on every run, aliasing the static buffers and the layer's weights: autograd
            # ties a leaf's AccumulateGrad node to the stream it was made on, and a node made on the
            # default stream (by an eager call whose graph is still alive) breaks the backward's
            # capture (cudaErrorStreamCaptureInvalidated). The gradients leave through _Replay.
            need = needs or (False,) * (2 + len(weights))
            xa = static_x.detach().requires_grad_(need[0])
            ha = None if static_h0 is None else static_h0.detach().requires_grad_(need[1])
            params = dict(stack.parameters)
            for name, w, n in zip(
                (name for names in stack.weight_names for name in names), weights, need[2:], strict=True
            ):
                params[name] = w.detach().requires_grad_(n)
            run_stack = replace(stack, parameters=params)
            surface = (xa, ha, *run_stack.all_weights())
            live["wanted"] = [t for t, n in zip(surface, need, strict=True) if n]
            live["out"], live["h_n"] = run_padded(run_stack, xa, DeviceLayout(static_len, steps), ha, None)
            return live["out"], live["h_n"]

        def backward(grad_out, grad_h_n):
            outs = (live["out"], live["h_n"])
            return torch.autograd.grad(outs, live["wanted"], (grad_out, grad_h_n), allow_unused=True)

        def warm_up():
            out, h_n = forward()
            if needs is not None:
                backward(torch.zeros_like(out), torch.zeros_like(h_n))

        CAPTURER.warm_up(warm_up, WARMUP_ITERS)
        live.clear()
        if self.pool is None:
            self.pool = CAPTURER.new_pool()
        fwd, (out, h_n) = CAPTURER.capture(forward, self.pool)
        graph = _Graph(fwd, None, static_x, static_len, static_h0, out.detach(), h_n.detach())
        if needs is not None:
            graph.grad_out, graph.grad_h_n = torch.zeros_like(out), torch.zeros_like(h_n)
            graph.bwd, grads = CAPTURER.capture(lambda: backward(graph.grad_out, graph.grad_h_n), self.pool)
            got = iter(grads)
            graph.grads = tuple(next(got) if n else None for n in needs)
        self.captures += 1
        return graph


def _fill(graph: _Graph, x: Tensor, pinned_lengths: Tensor, h0: Tensor | None) -> None:
    """Copy this call's inputs into the graph's buffers (steps past the bucket are padding)."""
    n = min(x.shape[1], graph.x.shape[1])
    graph.x[:, :n].copy_(x[:, :n])
    graph.lengths.copy_(pinned_lengths, non_blocking=True)
    if h0 is not None:
        graph.h0.copy_(h0)


def _fit_steps(t: Tensor, steps: int) -> Tensor:
    """A new tensor of t's first `steps` steps (dim 1), zero-padded when it has fewer."""
    if t.shape[1] >= steps:
        return t[:, :steps].clone()
    return torch.nn.functional.pad(t, (0, 0, 0, steps - t.shape[1]))


def _copy_out(graph: _Graph, steps: int) -> tuple[Tensor, Tensor]:
    return _fit_steps(graph.out, steps), graph.h_n.clone()


class _Replay(torch.autograd.Function):
    """One autograd node for a graphed call: forward replays the fwd graph, backward the bwd one."""

    @staticmethod
    def forward(ctx, graph, pending, pinned_lengths, h0, x, *weights):
        _fill(graph, x, pinned_lengths, h0)
        graph.fwd.replay()
        graph.generation += 1
        ctx.graph, ctx.generation, ctx.pending, ctx.steps = graph, graph.generation, pending, x.shape[1]
        return _copy_out(graph, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        graph = ctx.graph
        if graph.generation != ctx.generation:
            raise RuntimeError(
                "a graphed GRU call's saved state was overwritten by a later call of the same layer "
                "before this backward (e.g. backward with retain_graph after another forward); "
                "use GRU(graphs=False) for that"
            )
        n = min(grad_out.shape[1], graph.grad_out.shape[1])
        graph.grad_out[:, :n].copy_(grad_out[:, :n])
        graph.grad_h_n.copy_(grad_h_n)
        graph.bwd.replay()
        ctx.pending.done = True
        g_x, g_h0, *g_w = graph.grads
        # fresh tensors: autograd may keep a returned gradient as .grad, which the next replay
        # would overwrite; one foreach launch clones all the weights' gradients
        present = [g for g in g_w if g is not None]
        cloned = iter(torch._foreach_mul(present, 1.0) if present else [])
        g_w = [None if g is None else next(cloned) for g in g_w]
        g_x = None if g_x is None else _fit_steps(g_x, ctx.steps)
        g_h0 = None if g_h0 is None else g_h0.clone()
        return (None, None, None, g_h0, g_x, *g_w)
