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

``cell="cho2014"`` is the textbook cell (``gru_mm.nn.cho2014``): a hand-written packed step loop,
or on CUDA a fused Triton kernel (``gru_mm.nn.cho2014_triton``) that falls back to the loop.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from gru_mm.nn import cho2014_triton
from gru_mm.nn.cho2014 import cho2014_packed, to_internal
from gru_mm.nn.gru_layout import Layout
from gru_mm.nn.gru_plan import WIN_MARGIN, cached_plan, packed_wins, plan_cost, segments_can_win, step_cost
from gru_mm.nn.gru_scan import torch_gates_packed, torch_scan_packed
from gru_mm.nn.init import INITS, init_gru_, l2_penalty

CELLS = ("torch", "cho2014")
PATHS = ("auto", "padded_gather", "segments", "packed", "scan")
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
        path: ``"auto"``, ``"padded_gather"``, ``"segments"``, ``"packed"`` or ``"scan"`` (cell
            "torch" only; see the module docstring). cho2014 accepts only ``"auto"``.
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
        if cell == "cho2014" and path != "auto":
            raise ValueError(f"GRU path {path!r} applies to cell 'torch'; cell 'cho2014' takes path 'auto'")
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

        kw = {"device": device, "dtype": dtype}
        gate_rows = 3 * hidden_size
        self._groups: list[list[str]] = []  # parameter names per (layer, direction), nn.GRU's order
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * self.num_directions
            for d in range(self.num_directions):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                shapes = {
                    f"weight_ih_{sfx}": (gate_rows, layer_in),
                    f"weight_hh_{sfx}": (gate_rows, hidden_size),
                }
                if bias and cell == "torch":
                    shapes |= {f"bias_ih_{sfx}": (gate_rows,), f"bias_hh_{sfx}": (gate_rows,)}
                elif bias:
                    shapes |= {f"bias_{sfx}": (gate_rows,)}
                for name, shape in shapes.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **kw)))
                self._groups.append(list(shapes))
        self.reset_parameters()

    # ---- parameters ----
    def reset_parameters(self) -> None:
        init_gru_(self, self.init, self.hidden_size)
        self.flatten_parameters()

    def regularization_loss(self) -> Tensor:
        """The L2 penalty sum_g l2_g * ||W_g||^2 over the groups configured; add it to the loss."""
        return l2_penalty(self, **self.l2)

    def _weights(self, group: int) -> list[Tensor]:
        params = self._parameters  # a dict look-up: Module.__getattr__ costs ~1 us per name
        return [params[n] for n in self._groups[group]]

    def flatten_parameters(self) -> None:
        """Give each (layer, direction) one cuDNN-layout buffer, so padded calls do not copy weights.

        A no-op off CUDA or for cho2014; on any failure the weights stay as they are (still exact).
        """
        self._flat = False
        if self.cell != "torch" or not torch.backends.cudnn.is_available():
            return
        for g in range(len(self._groups)):
            ws = self._weights(g)
            if not all(
                w.is_cuda and w.dtype == ws[0].dtype and torch.backends.cudnn.is_acceptable(w) for w in ws
            ):
                return
            if len({w.data_ptr() for w in ws}) != len(ws):
                return
            try:
                from torch.backends.cudnn import rnn as cudnn_rnn

                with torch.cuda.device_of(ws[0]), torch.no_grad():
                    if torch._use_cudnn_rnn_flatten_weight():
                        torch._cudnn_rnn_flatten_weight(
                            ws,
                            len(ws),
                            ws[0].shape[1],
                            cudnn_rnn.get_cudnn_mode("GRU"),
                            self.hidden_size,
                            0,
                            1,
                            True,
                            False,
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
            f"dropout={self.dropout}, precision={self.precision!r}"
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
        B, T = x.shape[0], x.shape[1]
        lay = Layout.checked(lengths, B, T, x.device)
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if h0 is not None and (not isinstance(h0, Tensor) or tuple(h0.shape) != shape):
            got = tuple(h0.shape) if isinstance(h0, Tensor) else type(h0).__name__
            raise ValueError(f"h0 must have shape {shape} (num_layers*directions, B, hidden), got {got}")

        with self._precision(x):
            dtype = self._parameters["weight_hh_l0"].dtype if self.precision == "float32" else x.dtype
            x = x.to(dtype)
            h0 = None if h0 is None else h0.to(dtype=dtype, device=x.device)
            out, h_n, gates = self._run(x.contiguous(), lay, h0, return_gates)

        if not self.return_sequences:
            out = None
        elif packed_in:
            out = pack_padded_sequence(out, lay.lengths, batch_first=True, enforce_sorted=False)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        h_n = h_n if self.return_state else None
        return (out, h_n, gates) if return_gates else (out, h_n)

    def _precision(self, x: Tensor):
        return _no_autocast(x) if self.precision == "float32" else contextlib.nullcontext()

    # ---- execution ----
    def _h0(self, h0: Tensor | None, x: Tensor, rows: int) -> Tensor:
        if h0 is not None:
            return h0
        return x.new_zeros(self.num_layers * self.num_directions, rows, self.hidden_size)

    def choose_path(self, lengths: Tensor, device_type: str = "cpu") -> str:
        """The path this layer takes for these lengths on that device (for logs and benchmarks)."""
        lengths = torch.as_tensor(lengths)
        top = int(lengths.max()) if lengths.numel() else 0
        lay = Layout.checked(lengths, lengths.numel(), top, torch.device("cpu"))
        return self._resolve(lay, device_type)[0]

    def _resolve(self, lay: Layout, device_type: str) -> tuple[str, list | None]:
        """(path, segment plan or None).

        On a GPU "auto" decides in O(1) from (B, max_len, sum of lengths, sizes): torch's packed
        kernel where it wins (``packed_wins``), else whether sorted segments could beat the padded
        call at all (``segments_can_win``, a lower bound on any plan); only then is the planner run
        (cached per lengths). No device tensor is read.
        """
        if self.cell == "cho2014":
            return "cho2014", None
        path = self.path
        if path == "auto" and device_type == "cpu":
            return "scan", None
        if path in ("packed", "scan", "padded_gather"):
            return path, None
        if path == "auto" and (lay.uniform or lay.B < 2):
            return "padded_gather", None
        if path == "auto" and packed_wins(self.hidden_size, lay.B, lay.max_len, lay.total):
            return "packed", None
        cost = step_cost(device_type, self.input_size, self.hidden_size)
        if path == "auto" and not segments_can_win(lay.B, lay.max_len, lay.total, cost):
            return "padded_gather", None
        spans = cached_plan(lay.sorted_lens, cost)
        if path == "segments":
            return path, spans
        # sorting, gathers and extra calls must pay for themselves: ask for a clear predicted win
        if len(spans) <= 1 or plan_cost(spans, cost) > WIN_MARGIN * cost.span(lay.max_len, lay.B):
            return "padded_gather", None
        return "segments", spans

    def _run(self, x: Tensor, lay: Layout, h0: Tensor | None, want_gates: bool):
        B, T, H, LD = lay.B, lay.T, self.hidden_size, self.num_layers * self.num_directions
        if lay.max_len == 0:  # nothing to run: zeros out, h0 (or zeros) as the final state
            gates = None
            if want_gates:
                z = x.new_zeros(LD, B, T, H)
                gates = {"z": z, "r": z.clone()}
            # tie to the weights and the input with zero gradient, so DDP and loss.backward() see
            # them (and an encoder before this layer) used; where() keeps NaN padding out of it
            tie = 0.0 * sum(p.reshape(-1)[0] for p in self.parameters())
            if x.numel():
                tie = (
                    tie
                    + torch.where(
                        torch.zeros(1, dtype=torch.bool, device=x.device), x.reshape(-1)[:1], 0
                    ).sum()
                )
            out = x.new_zeros(B, T, self.num_directions * H) + tie
            return out, self._h0(h0, x, B) + tie, gates
        path, spans = self._resolve(lay, x.device.type)
        if want_gates and path != "cho2014":
            path = "scan"  # cuDNN's fused cell keeps its gates to itself; the scan recomputes them
        if path in ("cho2014", "scan"):
            # the hand-written loops run in the parameters' dtype whatever autocast says
            with _no_autocast(x):
                dtype = self.weight_hh_l0.dtype
                h0 = None if h0 is None else h0.to(dtype)
                x = x.to(dtype)
                if path == "cho2014" and _use_triton(x, lay.B, lay.max_len, self.hidden_size):
                    return self._run_cho_triton(x, lay, h0, want_gates)
                return self._run_scan(x, lay, h0, want_gates)
        quiet = x.is_cuda and (path == "packed" or not self._flat)
        with warnings.catch_warnings() if quiet else contextlib.nullcontext():
            if quiet:
                warnings.filterwarnings("ignore", message=_NOT_FLAT)
            if path == "packed":
                return self._run_packed(x, lay, h0) + (None,)
            return self._run_padded(x, lay, h0, spans) + (None,)

    def _layer_groups(self) -> Iterator[tuple[int, int, int]]:
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                yield layer, d, layer * self.num_directions + d

    def _between_layers(self, inp: Tensor, layer: int) -> Tensor:
        if self.dropout and self.training and layer < self.num_layers - 1:
            return F.dropout(inp, self.dropout, training=True)
        return inp

    def _run_padded(self, x: Tensor, lay: Layout, h0: Tensor | None, spans):
        """padded_gather (spans None) and segments: time-major inside, one map copy, no sync.

        Every map comes from one host-to-device copy (``Layout.padded_maps``); the kernels run
        time-major ([T, B, *], cuDNN's own layout, so it copies nothing), final states are one
        index_select at the true ends (its backward is one index_add), and the within-length
        reversal of the backward direction is one index_select on contiguous rows.
        """
        B, Tm, H = lay.B, lay.max_len, self.hidden_size
        maps = lay.padded_maps(sort=spans is not None, reverse=self.bidirectional)
        xt = (x if Tm == lay.T else x[:, :Tm]).transpose(0, 1)
        if spans is not None:
            xt = xt.index_select(1, maps.perm)
            h0 = None if h0 is None else h0.index_select(1, maps.perm)
        # Zero the padding: finite garbage there would be harmless, but inf/NaN would reach the
        # gradients of real steps through the padded steps' (zero-weighted) backward. With the
        # time-major mask first, where() writes time-major memory, so contiguous() is a no-op.
        xs = torch.where(maps.mask_tm, xt, 0).contiguous()
        train = torch.is_grad_enabled()  # cuDNN keeps its backward workspace only in train mode
        inp, finals = xs, []
        for layer, d, g in self._layer_groups():
            if d == 0:
                outs = []
            hx = h0[g : g + 1] if h0 is not None else xs.new_zeros(1, B, H)  # [1, B, H]
            src = inp if d == 0 else inp.reshape(Tm * B, -1).index_select(0, maps.rev).view(Tm, B, -1)
            y = self._torch_direction(src, hx, self._weights(g), spans, train)  # [Tm, B, H]
            last = y.reshape(Tm * B, H).index_select(0, maps.end)
            finals.append(last if maps.empty is None else torch.where(maps.empty, hx[0], last))
            if d == 1:
                y = y.reshape(Tm * B, H).index_select(0, maps.rev).view(Tm, B, H)
            outs.append(y)
            if d == self.num_directions - 1:
                inp = self._between_layers(outs[0] if d == 0 else torch.cat(outs, -1), layer)
        # one layer and direction (the common case): a view, not a copy kernel
        h_n = finals[0].unsqueeze(0) if len(finals) == 1 else torch.stack(finals)
        if spans is not None:
            inp = inp.index_select(1, maps.inv_perm)
            h_n = h_n.index_select(1, maps.inv_perm)
        # back to batch-major while zeroing the padding (mask first: its layout is the output's)
        out = torch.where(maps.mask_bm, inp.transpose(0, 1), 0)
        if Tm < lay.T:
            out = F.pad(out, (0, 0, 0, lay.T - Tm))
        return out, h_n

    def _torch_direction(self, x: Tensor, hx: Tensor, weights: list[Tensor], spans, train: bool) -> Tensor:
        """One layer, one direction over time-major rows [T, B, *] from hx [1, B, H]; returns a
        contiguous [T, B, H] whose steps past a row's end hold garbage."""
        # cuDNN refuses a non-contiguous hx ("rnn: hx is not contiguous"); the CPU kernel does not care
        if spans is None:
            return torch.gru(x, hx.contiguous(), weights, self.bias, 1, 0.0, train, False, False)[0]
        T, B = x.shape[0], x.shape[1]
        pieces = []
        for t0, t1, n in spans:
            h = hx[:, :n].contiguous()
            y = torch.gru(x[t0:t1, :n], h, weights, self.bias, 1, 0.0, train, False, False)[0]
            hx = y[-1:]  # the rows alive in the next span are a prefix of these
            pieces.append(F.pad(y, (0, 0, 0, B - n)) if n < B else y)
        if spans[-1][1] < T:
            pieces.append(x.new_zeros(T - spans[-1][1], B, self.hidden_size))
        return torch.cat(pieces, 0)

    def _run_packed(self, x: Tensor, lay: Layout, h0: Tensor | None):
        """torch's packed kernel on the non-empty rows (pack_padded_sequence rejects length 0)."""
        n, H, D = lay.n_alive, self.hidden_size, self.num_directions
        data = x.reshape(lay.B * lay.T, -1).index_select(0, lay.pack_index)
        h0s = self._h0(h0, x, lay.B).index_select(1, lay.perm)
        weights = [w for g in range(len(self._groups)) for w in self._weights(g)]
        batch_sizes = torch.tensor(lay.batch_sizes, dtype=torch.int64)
        drop = self.dropout if self.training else 0.0
        train = self.training or torch.is_grad_enabled()
        y, h = torch.gru(
            data,
            batch_sizes,
            h0s[:, :n].contiguous(),
            weights,
            self.bias,
            self.num_layers,
            drop,
            train,
            self.bidirectional,
        )
        out = y.new_zeros(lay.B * lay.T, D * H).index_copy(0, lay.pack_index, y).view(lay.B, lay.T, D * H)
        if n < lay.B:
            h = torch.cat([h, h0s[:, n:]], 1)
        return out, h.index_select(1, lay.inv_perm)

    def _run_scan(self, x: Tensor, lay: Layout, h0: Tensor | None, want_gates: bool):
        """Both hand-written loops share this: packed rows from start to end, no padded detour."""
        n, H, B, T = lay.n_alive, self.hidden_size, lay.B, lay.T
        data = x.reshape(B * T, -1).index_select(0, lay.pack_index)
        h0s = self._h0(h0, x, B).index_select(1, lay.perm)
        bs, prev, rev = lay.batch_sizes, lay.packed_prev, (lay.packed_reverse if self.bidirectional else None)
        inp, finals, zs = data, [], []
        for layer, d, g in self._layer_groups():
            if d == 0:
                outs = []
            ws = self._weights(g)
            src = inp if d == 0 else inp.index_select(0, rev)
            if self.cell == "cho2014":
                y, zr = cho2014_packed(src, h0s[g, :n], ws[0], ws[1], ws[2] if self.bias else None, bs, prev)
            else:
                b_ih, b_hh = (ws[2], ws[3]) if self.bias else (None, None)
                y, zr = torch_scan_packed(src, h0s[g, :n], ws[0], ws[1], b_ih, b_hh, bs, prev), None
                if want_gates:
                    zr = torch_gates_packed(src, h0s[g, :n], y, ws[0], ws[1], b_ih, b_hh, bs[0], prev)
            finals.append(y.index_select(0, lay.packed_end))
            if d == 1:
                y = y.index_select(0, rev)
                zr = zr.index_select(0, rev) if want_gates else zr
            outs.append(y)
            if want_gates:
                zs.append(zr)
            if d == self.num_directions - 1:
                inp = self._between_layers(outs[0] if d == 0 else torch.cat(outs, -1), layer)
        out = inp.new_zeros(B * T, inp.shape[1]).index_copy(0, lay.pack_index, inp).view(B, T, -1)
        h_n = torch.stack(finals)
        if n < B:
            h_n = torch.cat([h_n, h0s[:, n:]], 1)
        h_n = h_n.index_select(1, lay.inv_perm)
        gates = None
        if want_gates:
            zr_all = torch.cat(zs, 1)  # [N, LD*2H]
            pad = zr_all.new_zeros(B * T, zr_all.shape[1]).index_copy(0, lay.pack_index, zr_all)
            pad = pad.view(B, T, len(zs), 2, H).permute(3, 2, 0, 1, 4)
            gates = {"z": pad[0].contiguous(), "r": pad[1].contiguous()}
        return out, h_n, gates

    def _run_cho_triton(self, x: Tensor, lay: Layout, h0: Tensor | None, want_gates: bool):
        """cho2014 on CUDA: the fused kernel over the batch sorted longest first (padded layout)."""
        B, Tm, H = lay.B, lay.max_len, self.hidden_size
        xs = torch.where(lay.mask, x[:, :Tm], 0).index_select(0, lay.perm)
        h0s = self._h0(h0, x, B).index_select(1, lay.perm)
        lens = lay.sorted_lens
        rows, ends = lay.end_index(lens)
        empty = None
        if lay.n_alive < B:
            empty = torch.from_numpy(lens == 0).to(x.device, non_blocking=True).unsqueeze(1)
        rev = lay.reverse_index(lens, Tm) if self.bidirectional else None
        inp, finals, zs = xs, [], []
        for layer, d, g in self._layer_groups():
            if d == 0:
                outs = []
            ws = self._weights(g)
            src = inp if d == 0 else inp.reshape(B * Tm, -1).index_select(0, rev).view(B, Tm, -1)
            b = to_internal(ws[2], H) if self.bias else None
            pre = F.linear(src.transpose(0, 1), to_internal(ws[0], H), b)  # [Tm, B, 3H]
            y, zr = cho2014_triton.ChoTriton.apply(pre, h0s[g], to_internal(ws[1], H), lay.sorted_lens_i32)
            y, zr = y.transpose(0, 1), zr.transpose(0, 1)
            last = y[rows, ends]
            finals.append(last if empty is None else torch.where(empty, h0s[g], last))
            if d == 1:
                y = y.reshape(B * Tm, H).index_select(0, rev).view(B, Tm, H)
                if want_gates:
                    zr = zr.reshape(B * Tm, 2 * H).index_select(0, rev).view(B, Tm, 2 * H)
            outs.append(y)
            if want_gates:
                zs.append(zr)
            if d == self.num_directions - 1:
                inp = self._between_layers(outs[0] if d == 0 else torch.cat(outs, -1), layer)
        out = torch.where(lay.mask, inp.index_select(0, lay.inv_perm), 0)
        if Tm < lay.T:
            out = F.pad(out, (0, 0, 0, lay.T - Tm))
        h_n = torch.stack(finals).index_select(1, lay.inv_perm)
        gates = None
        if want_gates:
            zr = torch.where(lay.mask, torch.stack(zs, 2).index_select(0, lay.inv_perm).flatten(2), 0)
            zr = F.pad(zr, (0, 0, 0, lay.T - Tm)).view(B, lay.T, len(zs), 2, H).permute(3, 2, 0, 1, 4)
            gates = {"z": zr[0].contiguous(), "r": zr[1].contiguous()}
        return out, h_n, gates
