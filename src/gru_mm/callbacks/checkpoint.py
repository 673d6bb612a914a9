"""The checkpoints of a training run: what a resume, an evaluation or a deployment will load."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from gru_mm.models.module import nonfinite_tensors

log = logging.getLogger("gru_mm.train")


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with two differences.

    - `last.ckpt` is written every epoch (with `save_last: true`). Lightning 2.6 writes it only
      when a top-k checkpoint was written at the same step, so a run whose monitored metric stopped
      improving would be resumed from an older epoch, losing more than the work since its last epoch.
    - Weights holding NaN or inf are not saved, with a warning: `last.ckpt` and the best checkpoint stay
      the last finite ones (and the best is not deleted for them). NaN/inf would poison every later load.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._checked_step: int | None = None
        self._finite = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):  # the default: validation runs once per epoch
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer: pl.Trainer) -> None:
        # _should_skip_saving_checkpoint: true when super() wrote at this step already (or saves nothing now)
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _weights_finite(self, trainer: pl.Trainer) -> bool:
        """Checked once per step (a save writes the top-k and the last checkpoint in turn)."""
        if self._checked_step != trainer.global_step:
            self._checked_step = trainer.global_step
            bad = nonfinite_tensors(trainer.lightning_module.state_dict())
            self._finite = not bad
            if bad:
                log.warning(
                    "not writing a checkpoint at epoch %d, step %d: non-finite weights in %s; the last "
                    "checkpoint stays %s",
                    trainer.current_epoch,
                    trainer.global_step,
                    ", ".join(bad[:3]),
                    self.last_model_path or "(none yet)",
                )
        return self._finite

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        if self._weights_finite(trainer):
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        if self._weights_finite(trainer):
            super()._save_last_checkpoint(trainer, monitor_candidates)
