"""Initialisers for GRU weights (torch default vs. classic Keras) and the per-group L2 penalty.

Weight groups follow the parameter names: ``weight_ih*`` is the input kernel, ``weight_hh*`` the
recurrent kernel, ``bias*`` the biases. This holds for ``torch.nn.GRU`` and for ``gru_mm.nn.GRU``
with either cell.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

INITS = ("torch", "keras")
GROUPS = ("input_kernel", "recurrent_kernel", "bias")


def weight_group(name: str) -> str:
    """Which of GROUPS a GRU parameter belongs to, from its name."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf.startswith("weight_ih"):
        return "input_kernel"
    if leaf.startswith("weight_hh"):
        return "recurrent_kernel"
    if leaf.startswith("bias"):
        return "bias"
    raise ValueError(f"parameter {name!r} is not a GRU weight (weight_ih*, weight_hh* or bias*)")


@torch.no_grad()
def torch_default_(module: nn.Module, hidden_size: int) -> None:
    """torch.nn.GRU's own scheme: every weight and bias U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


@torch.no_grad()
def keras_(module: nn.Module) -> None:
    """Classic Keras GRU: input kernel glorot_uniform, recurrent kernel orthogonal, bias zeros.

    Keras initialises the whole [in, 3H] kernel at once, so fan_out is 3H; torch stores the
    transpose [3H, in], for which xavier_uniform_ computes the same bound.
    """
    for name, p in module.named_parameters():
        group = weight_group(name)
        if group == "input_kernel":
            nn.init.xavier_uniform_(p)
        elif group == "recurrent_kernel":
            nn.init.orthogonal_(p)
        else:
            nn.init.zeros_(p)


def init_gru_(module: nn.Module, scheme: str, hidden_size: int) -> None:
    if scheme == "torch":
        torch_default_(module, hidden_size)
    elif scheme == "keras":
        keras_(module)
    else:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}")


def l2_penalty(
    module: nn.Module, input_kernel: float = 0.0, recurrent_kernel: float = 0.0, bias: float = 0.0
) -> Tensor:
    """sum over groups of coef * sum(w**2), as Keras' l2 regularisers; add it to the training loss."""
    coefs = {"input_kernel": input_kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}
    for group, c in coefs.items():
        if c < 0 or not math.isfinite(c):
            raise ValueError(f"L2 coefficient for {group} must be a finite number >= 0, got {c}")
    total: Tensor | None = None
    for name, p in module.named_parameters():
        c = coefs[weight_group(name)]
        if c:
            term = c * p.pow(2).sum()
            total = term if total is None else total + term
    if total is None:
        p0 = next(module.parameters(), None)
        return torch.zeros((), device=None if p0 is None else p0.device)
    return total
