"""torch's private GRU entry points behind functions with named arguments.

``torch.gru`` and ``torch._cudnn_rnn_flatten_weight`` take long runs of bare positional flags; each
wrapper here names them once. ``torch.gru`` is looked up at call time and called positionally, so
a stand-in patched over it (the host benchmark ``gru_mm.bench.gru_host``, tests) sees every call.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gru_padded_kernel(
    inputs: Tensor, initial_state: Tensor, weights: list[Tensor], *, has_biases: bool, train: bool
) -> Tensor:
    """One layer and direction of torch's GRU over time-major padded rows; returns [T, B, H].

    inputs: [T, B, F]; initial_state: [1, B, H], contiguous (cuDNN refuses anything else).
    train: keep cuDNN's backward workspace (it cannot run backward after a train=False call).
    """
    # positional tail: num_layers=1, dropout=0.0, train, bidirectional=False, batch_first=False
    return torch.gru(inputs, initial_state, weights, has_biases, 1, 0.0, train, False, False)[0]


def gru_packed_kernel(
    data: Tensor,
    batch_sizes: Tensor,
    initial_state: Tensor,
    weights: list[Tensor],
    *,
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
) -> tuple[Tensor, Tensor]:
    """torch's packed GRU over all layers and directions at once: (outputs [N, D*H], h_n).

    data: [N, F] packed rows; batch_sizes: int64 on the CPU; initial_state: [L*D, batch_sizes[0], H],
    contiguous; weights: every layer's and direction's, nn.GRU's order; dropout: between layers.
    """
    # the packed overload: its flags are has_biases, num_layers, dropout, train, bidirectional, in order
    return torch.gru(
        data, batch_sizes, initial_state, weights, has_biases, num_layers, dropout, train, bidirectional
    )


def flatten_cudnn_weights(weights: list[Tensor], *, input_size: int, hidden_size: int) -> None:
    """Copy one layer's and direction's GRU weights into one cuDNN-layout buffer they then view.

    Must run under torch.no_grad() with the weights' device current; raises on failure.
    """
    from torch.backends.cudnn import rnn as cudnn_rnn

    if not torch._use_cudnn_rnn_flatten_weight():
        return
    # positional: (weight_arr, weight_stride0, input_size, mode, hidden_size, proj_size=0,
    # num_layers=1, batch_first=True, bidirectional=False)
    torch._cudnn_rnn_flatten_weight(
        weights, len(weights), input_size, cudnn_rnn.get_cudnn_mode("GRU"), hidden_size, 0, 1, True, False
    )
