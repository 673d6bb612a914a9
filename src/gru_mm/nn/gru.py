"""`GRU`: a variable-length GRU layer with packed-sequence results at padded-kernel speed.

Paths for ``cell="torch"`` (all exact, i.e. equal to ``nn.GRU`` over ``pack_padded_sequence``):

- ``"padded_gather"``: one padded kernel call per layer and direction. The forward direction is
  causal, so real steps never see padding; final states are gathered at each true end. The backward
  direction runs on each sequence reversed within its own length, then is reversed back.
- ``"segments"``: the batch sorted longest first, time cut into a few spans, each one padded call
  over the sequences still alive (see ``gru_plan``): skips most of the padding's work.
- ``"packed"``: torch's packed kernel (the reference semantics) over rows gathered with our own
  index maps; on a GPU the fastest from hidden 512 on when there is much padding.
- ``"scan"``: the same equations in a hand-written packed loop and backward (``gru_scan``); on the
  CPU it beats ATen's GRU, whose per-step autograd overhead dominates there.
- ``"auto"`` (default): "scan" on the CPU; on a GPU "packed" from hidden 512 on with much padding
  (``gru_plan.packed_wins``), else padded_gather or segments, whichever the cost model expects to
  be faster (cuDNN's padded kernel is the fastest per step there). The decision is O(1) unless
  segments can win at all (``gru_plan.segments_can_win``), and reads no device value.

``graphs=True`` replays padded_gather from CUDA graphs on a GPU, one per (batch, bucketed
longest length, ...) shape, for "padded_gather" and for "auto" wherever auto does not pick
"segments" (graphed in place of "packed" too); eager is the fallback (``gru_graphs``).

``cell="cho2014"`` is the textbook cell (``gru_mm.nn.cho2014``): a hand-written packed step loop,
or on CUDA a fused Triton kernel (``gru_mm.nn.cho2014_triton``) that falls back to the loop.

``path="persistent"`` (either cell; opt-in, "auto" never picks it until GPU timings exist): one
Triton launch per layer and direction whose programs keep the recurrent weights on chip and meet at
a grid-wide barrier each step (``gru_mm.nn.gru_persistent``), on packed rows. Where it cannot run
(the CPU, hidden > its maximum, a failed self-check) the cell's packed step loop runs instead.

This module holds the layer (parameters, argument checks, dispatch); the paths themselves are in
``gru_paths``, the path decision in ``gru_plan``, the index maps in ``gru_layout``, and torch's
private kernel calls behind named arguments in ``gru_kernels``.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from gru_mm.nn import cho2014_triton, gru_persistent
from gru_mm.nn.gru_graphs import GraphCache
from gru_mm.nn.gru_kernels import flatten_cudnn_weights
from gru_mm.nn.gru_layout import Layout
from gru_mm.nn.gru_paths import (
    Spans,
    Stack,
    run_cho2014_triton,
    run_empty,
    run_packed,
    run_packed_loop,
    run_padded,
)
from gru_mm.nn.gru_plan import resolve_path
from gru_mm.nn.init import INITS, init_gru_, l2_penalty

CELLS = ("torch", "cho2014")
PATHS = ("auto", "padded_gather", "segments", "packed", "scan", "persistent")
CHO2014_PATHS = ("auto", "persistent")
PRECISIONS = ("float32", "autocast")
# A multi-layer packed call cannot use per-(layer, direction) weight buffers; cuDNN then copies the
# weights (cheap next to the recurrence) and warns on every call.
_NOT_FLAT = "RNN module weights are not part of single contiguous chunk"


def _no_autocast(x: Tensor):
    # entering an autocast context costs ~10 us, so only switch it off when it is on
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def _use_triton(x: Tensor, batch: int, steps: int, hidden: int) -> bool:
    return x.is_cuda and cho2014_triton.usable(x, batch, steps, hidden)


class GRU(nn.Module):
    """GRU over padded variable-length batches; results equal packed ``nn.GRU``.

    Args:
        input_size, hidden_size, num_layers, bidirectional, dropout, bias, batch_first: as
            ``torch.nn.GRU`` (dropout is applied to each layer's output except the last).
        cell: ``"torch"`` (torch/cuDNN equations; parameter names and shapes equal ``nn.GRU``'s,
            so state dicts load both ways) or ``"cho2014"`` (textbook cell; per layer and direction
            ``weight_ih_l{k}`` [3H, F], ``weight_hh_l{k}`` [3H, H], ``bias_l{k}`` [3H], gate order
            z, r, candidate; ``_reverse`` suffix for the backward direction).
        path: ``"auto"``, ``"padded_gather"``, ``"segments"``, ``"packed"``, ``"scan"`` or
            ``"persistent"`` (see the module docstring). cho2014 accepts ``"auto"`` and ``"persistent"``.
        return_sequences / return_state: when False, that slot of the result is None (Keras-style).
        init: ``"torch"`` (nn.GRU's uniform(+-1/sqrt(H))) or ``"keras"`` (input kernel
            glorot_uniform, recurrent kernel orthogonal, bias zeros).
        l2_input_kernel, l2_recurrent_kernel, l2_bias: coefficients of ``regularization_loss()``,
            which the training loss must add.
        precision: ``"float32"`` (default): autocast is switched off inside the layer and it runs
            in its parameters' dtype, so under ``torch.autocast("cuda", dtype=torch.bfloat16)`` the
            GRU stays float32 (torch would otherwise run cuDNN's GRU in float16 without any gradient
            scaling). ``"autocast"``: leave the dtype to autocast on the cuDNN paths (padded_gather,
            segments, packed); use a GradScaler with it. The hand-written loops (scan, cho2014)
            always run in the parameters' dtype.
        graphs: on CUDA, replay the padded path ("padded_gather", or "auto" unless it picks
            "segments") from CUDA graphs kept per shape; the longest length is rounded up to a
            bucket (``gru_graphs.bucket_steps``). The first call of a shape runs eagerly, as does
            everything graphs cannot serve (see ``gru_graphs``). Results equal eager ones at the
            bucket's length; memory grows by one call's activations per shape kept (at most
            ``gru_graphs.MAX_GRAPHS``).

    ``forward(x, lengths, h0=None, return_gates=False) -> (outputs, h_n)``:
        x: [B, T, F] padded float (batch_first) or a PackedSequence (then lengths is omitted and
        outputs is a PackedSequence). lengths: [B] integer tensor on the CPU, values in 0..T.
        h0: optional [num_layers*D, B, H]. outputs: [B, T, D*H], zeros at padded steps.
        h_n: [num_layers*D, B, H], each sequence's state at its true end (h0 for length 0).
        return_gates=True adds a third item ``{"z": ..., "r": ...}``, each [num_layers*D, B, T, H]
        in input time order, zeros at padding; ``gates(x, lengths)`` returns just that dict. Each
        cell's own z: cho2014 takes the new candidate where z is near 1, torch keeps the old state.
        With cell="torch" this runs the "scan" path (exact on any device; slow on a GPU, meant for
        inspecting a few samples).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        batch_first: bool = True,
        cell: str = "torch",
        path: str = "auto",
        return_sequences: bool = True,
        return_state: bool = True,
        bias: bool = True,
        init: str = "torch",
        l2_input_kernel: float = 0.0,
        l2_recurrent_kernel: float = 0.0,
        l2_bias: float = 0.0,
        precision: str = "float32",
        graphs: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        for name, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GRU {name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"GRU dropout must lie in [0, 1), got {dropout!r}")
        if cell not in CELLS:
            raise ValueError(f"GRU cell must be one of {CELLS}, got {cell!r}")
        if path not in PATHS:
            raise ValueError(f"GRU path must be one of {PATHS}, got {path!r}")
        if cell == "cho2014" and path not in CHO2014_PATHS:
            raise ValueError(
                f"GRU path {path!r} applies to cell 'torch'; cell 'cho2014' takes {CHO2014_PATHS}"
            )
        if init not in INITS:
            raise ValueError(f"GRU init must be one of {INITS}, got {init!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"GRU precision must be one of {PRECISIONS}, got {precision!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.cell = cell
        self.path = path
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.bias = bias
        self.init = init
        self.l2 = {"input_kernel": l2_input_kernel, "recurrent_kernel": l2_recurrent_kernel, "bias": l2_bias}
        self.precision = precision
        self.graphs = bool(graphs)
        self._graph_cache = GraphCache()

        kw = {"device": device, "dtype": dtype}
        gate_rows = 3 * hidden_size
        # parameter names per (layer, direction) = group, in nn.GRU's order (so its state dicts load)
        self._weight_names: list[list[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                suffix = f"l{layer}" + ("_reverse" if direction else "")
                shapes = {
                    f"weight_ih_{suffix}": (gate_rows, layer_input),
                    f"weight_hh_{suffix}": (gate_rows, hidden_size),
                }
                if bias and cell == "torch":
                    shapes |= {f"bias_ih_{suffix}": (gate_rows,), f"bias_hh_{suffix}": (gate_rows,)}
                elif bias:
                    shapes |= {f"bias_{suffix}": (gate_rows,)}
                for name, shape in shapes.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **kw)))
                self._weight_names.append(list(shapes))
        self.reset_parameters()

    # ---- parameters ----
    def reset_parameters(self) -> None:
        init_gru_(self, self.init, self.hidden_size)
        self.flatten_parameters()

    def regularization_loss(self) -> Tensor:
        """The L2 penalty sum_g l2_g * ||W_g||^2 over the groups configured; add it to the loss."""
        return l2_penalty(self, **self.l2)

    def _group_weights(self, group: int) -> list[Tensor]:
        params = self._parameters  # a dict look-up: Module.__getattr__ costs ~1 us per name
        return [params[name] for name in self._weight_names[group]]

    def flatten_parameters(self) -> None:
        """Give each (layer, direction) one cuDNN-layout buffer, so padded calls do not copy weights.

        A no-op off CUDA or for cho2014; on any failure the weights stay as they are (still exact).
        """
        self._flat = False
        self._graph_cache.clear()  # graphs read the old weights' memory
        if self.cell != "torch" or not torch.backends.cudnn.is_available():
            return
        for group in range(len(self._weight_names)):
            weights = self._group_weights(group)
            if not all(
                w.is_cuda and w.dtype == weights[0].dtype and torch.backends.cudnn.is_acceptable(w)
                for w in weights
            ):
                return
            if len({w.data_ptr() for w in weights}) != len(weights):
                return
            try:
                with torch.cuda.device_of(weights[0]), torch.no_grad():
                    flatten_cudnn_weights(
                        weights, input_size=weights[0].shape[1], hidden_size=self.hidden_size
                    )
            except Exception:  # private API: fall back to cuDNN's copying path
                return
        self._flat = True

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.flatten_parameters()  # moving to a GPU or changing dtype breaks the shared buffers
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, cell={self.cell!r}, path={self.path!r}, "
            f"dropout={self.dropout}, precision={self.precision!r}" + (", graphs=True" if self.graphs else "")
        )

    # ---- API ----
    def gates(
        self, x: Tensor | PackedSequence, lengths: Tensor | None = None, h0: Tensor | None = None
    ) -> dict:
        """Per-step gate activations {"z", "r"}, each [num_layers*D, B, T, H], zeros at padding."""
        return self.forward(x, lengths, h0, return_gates=True)[2]

    def forward(
        self,
        x: Tensor | PackedSequence,
        lengths: Tensor | None = None,
        h0: Tensor | None = None,
        return_gates: bool = False,
    ):
        packed_in = isinstance(x, PackedSequence)
        if packed_in:
            if lengths is not None:
                raise ValueError("pass lengths only with a padded input; a PackedSequence carries its own")
            x, lengths = pad_packed_sequence(x, batch_first=True)
        elif not isinstance(x, Tensor):
            raise ValueError(f"GRU input must be a Tensor or PackedSequence, got {type(x).__name__}")
        elif not self.batch_first:
            x = x.transpose(0, 1)
        if x.dim() != 3 or x.shape[-1] != self.input_size or not x.is_floating_point():
            raise ValueError(
                f"GRU input must be a float tensor [B, T, {self.input_size}] (batch_first), "
                f"got {x.dtype} of shape {tuple(x.shape)}"
            )
        layout = Layout.checked(lengths, x.shape[0], x.shape[1], x.device)
        shape = (self.num_layers * self.num_directions, x.shape[0], self.hidden_size)
        if h0 is not None and (not isinstance(h0, Tensor) or tuple(h0.shape) != shape):
            got = tuple(h0.shape) if isinstance(h0, Tensor) else type(h0).__name__
            raise ValueError(f"h0 must have shape {shape} (num_layers*directions, B, hidden), got {got}")

        with _no_autocast(x) if self.precision == "float32" else contextlib.nullcontext():
            dtype = self._parameters["weight_hh_l0"].dtype if self.precision == "float32" else x.dtype
            if x.dtype != dtype:  # a no-op .to() still costs a dispatch
                x = x.to(dtype)
            if h0 is not None and (h0.dtype != dtype or h0.device != x.device):
                h0 = h0.to(dtype=dtype, device=x.device)
            out, h_n, gates = self._run(x.contiguous(), layout, h0, return_gates)

        if not self.return_sequences:
            out = None
        elif packed_in:
            out = pack_padded_sequence(out, layout.lengths, batch_first=True, enforce_sorted=False)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        h_n = h_n if self.return_state else None
        return (out, h_n, gates) if return_gates else (out, h_n)

    def choose_path(self, lengths: Tensor, device_type: str = "cpu") -> str:
        """The path this layer takes for these lengths on that device (for logs and benchmarks)."""
        lengths = torch.as_tensor(lengths)
        longest = int(lengths.max()) if lengths.numel() else 0
        layout = Layout.checked(lengths, lengths.numel(), longest, torch.device("cpu"))
        return self._resolve(layout, device_type)[0]

    def _resolve(self, layout: Layout, device_type: str) -> tuple[str, Spans | None]:
        """(path, segment plan or None): ``gru_plan.resolve_path`` for this layer; reads no device value."""
        return resolve_path(self.cell, self.path, layout, device_type, self.input_size, self.hidden_size)

    # ---- dispatch to gru_paths ----
    def _graphable(self, x: Tensor) -> bool:
        """Can this call replay a CUDA graph (gru_graphs)? The cache itself decides per shape."""
        return (
            x.is_cuda
            and self.cell == "torch"
            and self.path in ("auto", "padded_gather")
            and not torch.is_autocast_enabled("cuda")  # precision "autocast" under autocast: eager
            and not getattr(self, "_is_replica", False)  # DataParallel's per-call copies
        )

    def _stack(self) -> Stack:
        return Stack(
            parameters=self._parameters,
            weight_names=self._weight_names,
            cell=self.cell,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_directions=self.num_directions,
            has_biases=self.bias,
            dropout=self.dropout,
            training=self.training,
        )

    def _run(self, x: Tensor, layout: Layout, h0: Tensor | None, want_gates: bool):
        stack = self._stack()
        if layout.max_len == 0:
            return run_empty(stack, x, layout, h0, want_gates)
        path = spans = None
        if self.graphs and not want_gates and self._graphable(x):
            if self.path == "auto":
                path, spans = self._resolve(layout, x.device.type)
            # segments skip GPU work on padding (long, small-hidden batches, where cuDNN is GPU-bound
            # and a graph of the padded call has little host time to remove): they stay eager
            if path != "segments":
                with warnings.catch_warnings() if not self._flat else contextlib.nullcontext():
                    if not self._flat:
                        warnings.filterwarnings("ignore", message=_NOT_FLAT)
                    got = self._graph_cache.run(stack, x, layout.lengths, layout.max_len, h0)
                if got is not None:
                    return (*got, None)
        if path is None:
            path, spans = self._resolve(layout, x.device.type)
        if want_gates and path not in ("cho2014", "persistent"):
            path = "scan"  # cuDNN's fused cell keeps its gates to itself; the scan recomputes them
        if path in ("cho2014", "scan", "persistent"):
            # the hand-written loops run in the parameters' dtype whatever autocast says
            with _no_autocast(x):
                dtype = self._parameters["weight_hh_l0"].dtype
                h0 = None if h0 is None else h0.to(dtype)
                x = x.to(dtype)
                if path == "persistent":
                    persistent = gru_persistent.usable(x, self.hidden_size)
                    return run_packed_loop(stack, x, layout, h0, want_gates, persistent=persistent)
                if path == "cho2014" and _use_triton(x, layout.batch_size, layout.max_len, self.hidden_size):
                    return run_cho2014_triton(stack, x, layout, h0, want_gates)
                return run_packed_loop(stack, x, layout, h0, want_gates)
        quiet = x.is_cuda and (path == "packed" or not self._flat)
        with warnings.catch_warnings() if quiet else contextlib.nullcontext():
            if quiet:
                warnings.filterwarnings("ignore", message=_NOT_FLAT)
            if path == "packed":
                return (*run_packed(stack, x, layout, h0), None)
            return (*run_padded(stack, x, layout, h0, spans), None)
