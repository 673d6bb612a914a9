"""A linear warmup, then a cosine decay, stepped every training step, with both lengths in epochs.

torch's SequentialLR(LinearLR, CosineAnnealingLR) draws the same curve but takes its lengths in steps, which a
config written in epochs does not know before the trainer has the data; this LambdaLR gets steps per epoch
from the trainer instead."""

from __future__ import annotations

import functools
import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from gru_mm.config import ConfigError


class WarmupCosineLR(LambdaLR):
    """Each group's rate rises linearly from lr / warmup_steps to lr over the first `warmup_epochs` epochs,
    then falls along a cosine to `eta_min` at the end of `T_max` epochs (CosineAnnealingLR's curve, per step).

    Why warm up: Adam's first steps, taken before its moment estimates settle, move every weight by about
    lr; a convolutional frame encoder trained from scratch (frame_resnet under a GRU) then sat at chance for
    most of a short run (docs/benchmarks.md, "Why frames-only gru-mm-train learned slower").
    `steps_per_epoch` (optimiser steps per epoch) is filled in by the LightningModule from the trainer,
    because this class declares `needs_steps_per_epoch`. Step it every training step
    (scheduler_interval: step).
    """

    needs_steps_per_epoch = True

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        T_max: float,  # noqa: N803 (CosineAnnealingLR's name, so configs swap one for the other)
        warmup_epochs: float = 1.0,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ):
        if steps_per_epoch < 1 or T_max <= 0 or warmup_epochs < 0 or eta_min < 0:
            raise ConfigError(
                "scheduler (WarmupCosineLR) needs steps_per_epoch >= 1, T_max > 0, warmup_epochs >= 0 and "
                f"eta_min >= 0, got {steps_per_epoch}, {T_max}, {warmup_epochs}, {eta_min}"
            )
        self.warmup_steps = warmup_epochs * steps_per_epoch
        self.total_steps = T_max * steps_per_epoch
        self.eta_min = eta_min
        bases = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        super().__init__(optimizer, [functools.partial(self.factor, base) for base in bases], last_epoch)

    def factor(self, base: float, step: int) -> float:
        """The multiple of `base` (a group's rate) that training step `step` (from 0) uses."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if base <= 0:
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        lr = self.eta_min + (base - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr / base


def run_length(factory: Any, trainer: Any, interval: str) -> dict[str, int]:
    """What a scheduler factory needs to know about the run: `steps_per_epoch` for those that declare
    `needs_steps_per_epoch` (from the trainer's estimate of optimiser steps), nothing for the others."""
    target = factory
    while isinstance(target, functools.partial):
        target = target.func
    if not getattr(target, "needs_steps_per_epoch", False):
        return {}
    if interval != "step":
        raise ConfigError(
            f"scheduler {target.__name__} is stepped every training step: set scheduler_interval=step "
            f"(it is {interval})"
        )
    if trainer is None:
        raise ValueError(f"scheduler {target.__name__} needs the trainer (steps per epoch): attach one first")
    total = trainer.estimated_stepping_batches  # (sets up the training data, so its batch count is known)
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    if epochs is None or math.isinf(total):  # no epoch limit (lr_find's trainer): one epoch's batches
        batches = trainer.num_training_batches
        per_epoch = batches / max(trainer.accumulate_grad_batches, 1) if math.isfinite(batches) else 1
    else:
        per_epoch = total / epochs
    return {"steps_per_epoch": max(1, math.ceil(per_epoch))}
