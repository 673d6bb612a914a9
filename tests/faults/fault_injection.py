"""Test-only callbacks that fault tests add to a real `gru-mm-train` run, e.g.
`+callbacks.nan._target_=fault_injection.NanGradientAt '+callbacks.nan.steps=[3]'` (this folder is on the
run's PYTHONPATH: faults_testlib.cli_env). A checkpoint whose config names them cannot be resumed (they are
not on the allow-list of `_target_`s), so they are for runs that are not resumed."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class PauseAt(pl.Callback):
    """After training batch `batch` of epoch `epoch`: create `<folder>/reached`, then wait until
    `<folder>/go` exists (at most `timeout_s`), so that a test acts while the run cannot go on."""

    def __init__(self, folder: str, epoch: int = 0, batch: int = 0, timeout_s: float = 600):
        self.folder, self.epoch, self.batch, self.timeout_s = Path(folder), epoch, batch, timeout_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch):
            return
        (self.folder / "reached").touch()
        deadline = time.monotonic() + self.timeout_s
        while not (self.folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


class NanGradientAt(pl.Callback):
    """Make one gradient NaN before the optimizer steps number `steps` (global steps), as a bad batch would.
    Callbacks' on_before_optimizer_step runs before the module's, which sees the NaN."""

    def __init__(self, steps: list[int]):
        self.steps = set(steps)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step in self.steps:
            grad = next(p.grad for p in pl_module.parameters() if p.grad is not None)
            grad.view(-1)[0] = float("nan")


class NanWeightsAfter(pl.Callback):
    """Make one weight NaN after training batch `batch` of epoch `epoch` (an update that overflowed)."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            with torch.no_grad():
                next(iter(pl_module.parameters())).view(-1)[0] = float("nan")
