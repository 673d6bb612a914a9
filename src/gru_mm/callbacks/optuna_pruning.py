"""Report a validation metric to this run's Optuna trial after each validation epoch; stop hopeless trials.

The sweeper passes the trial's identity as trial.study_name / trial.storage / trial.number; when any is null
(a plain training run) the callback does nothing. Steps are epochs, so trials with different batch
sizes compare.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytorch_lightning as pl

from hydra_plugins.gru_mm_optuna_sweeper._storage import PRUNER_ATTR, open_storage


class OptunaPruning(pl.Callback):
    def __init__(
        self,
        monitor: str,
        study_name: str | None = None,
        storage: str | None = None,
        trial_number: int | None = None,
        pruner: Any = None,
    ) -> None:
        self.monitor = monitor
        self.study_name = study_name
        self.storage = storage
        self.trial_number = trial_number
        self.pruner = pruner  # an optuna pruner; null: the one the sweeper stored with the study
        self._trial: optuna.Trial | None = None

    @property
    def active(self) -> bool:
        return None not in (self.study_name, self.storage, self.trial_number)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.active and trainer.is_global_zero and self._trial is None:
            self._trial = load_trial(self.study_name, self.storage, int(self.trial_number), self.pruner)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active or trainer.sanity_checking:
            return
        message = None
        if trainer.is_global_zero:  # only rank 0 talks to the storage; the decision is broadcast
            message = self._report(trainer)
        message = trainer.strategy.broadcast(message, src=0)
        if message is not None:
            raise optuna.TrialPruned(message)

    def _report(self, trainer: pl.Trainer) -> str | None:
        assert self._trial is not None
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(
                f"OptunaPruning monitor '{self.monitor}' is not a logged metric; "
                f"logged: {sorted(trainer.callback_metrics)}."
            )
        value, epoch = float(value), trainer.current_epoch
        self._trial.report(value, step=epoch)
        if self._trial.should_prune():
            return f"trial {self.trial_number} pruned at epoch {epoch} ({self.monitor}={value:.6g})"
        return None


def load_trial(study_name: str, storage: str, number: int, pruner: Any = None) -> optuna.Trial:
    """The RUNNING trial `number` of a stored study, as a live optuna.Trial that can report and prune."""
    from hydra.utils import instantiate

    backend = open_storage(storage)
    if pruner is None:
        summary = optuna.load_study(study_name=study_name, storage=backend)
        config = summary.user_attrs.get(PRUNER_ATTR)
        pruner = instantiate(config) if config else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=study_name, storage=backend, pruner=pruner)
    if len(study.directions) > 1:
        raise ValueError(
            f"OptunaPruning: study '{study_name}' has {len(study.directions)} objectives; "
            "Optuna prunes single-objective studies only (drop the callback for this sweep)."
        )
    study_id = backend.get_study_id_from_name(study_name)
    try:
        trial_id = backend.get_trial_id_from_study_id_trial_number(study_id, number)
    except KeyError:
        raise ValueError(f"OptunaPruning: study '{study_name}' has no trial number {number}.") from None
    return optuna.trial.Trial(study, trial_id)
