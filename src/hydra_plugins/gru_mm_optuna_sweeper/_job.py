"""The task as each trial's job runs it: the trial's own process tells the study the result as soon as
the task returns, instead of the sweeper telling a whole batch once its slowest trial is done (or never,
if it dies)."""

from __future__ import annotations

import logging
from typing import Any

from hydra.types import TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class TellingTask:
    """Wraps the task function given to the launcher; picklable, so submitit jobs tell from their own host."""

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function
        self.metric: Any = None
        self.grid = False
        self.max_retries = 2

    def configure(self, metric: Any, grid: bool, max_retries: int) -> None:
        self.metric, self.grid, self.max_retries = metric, grid, max_retries

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            value = self.task_function(cfg)
        except Exception as err:  # still raised: Hydra's JobReturn carries it to the sweeper
            self._tell(cfg, None, err)
            raise
        self._tell(cfg, value, None)
        return value

    def _tell(self, cfg: DictConfig, value: Any, error: BaseException | None) -> None:
        import optuna

        from . import _storage, _study

        trial = cfg.get("trial") if isinstance(cfg, DictConfig) else None
        if not trial or None in (trial.get("number"), trial.get("storage"), trial.get("study_name")):
            return  # not run by this sweeper (the task has no trial identity)
        try:
            storage = _storage.open_storage(str(trial.storage))
            study = optuna.load_study(
                study_name=str(trial.study_name), storage=storage, sampler=optuna.samplers.RandomSampler()
            )
            _study.record(
                study,
                storage,
                int(trial.number),
                value,
                error,
                metric=self.metric,
                grid=self.grid,
                max_retries=self.max_retries,
            )
        except Exception as e:  # the sweeper tells it when the batch returns
            log.warning(f"Trial {trial.number}: could not tell the study now ({_storage.redact(str(e))}).")
