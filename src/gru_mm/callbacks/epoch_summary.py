"""One log line per epoch: readable in CI logs, SLURM output files and anywhere without a progress bar."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

log = logging.getLogger("gru_mm.train")


class EpochSummary(pl.Callback):
    def __init__(self, keys: tuple[str, ...] = ("train/loss_epoch", "val/loss", "val/acc", "val/f1")):
        self.keys = keys
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"{k}={float(metrics[k]):.4f}" for k in self.keys if k in metrics]
        log.info(
            "epoch %d/%d %s (%.1fs)",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            " ".join(parts),
            time.perf_counter() - self._start,
        )
