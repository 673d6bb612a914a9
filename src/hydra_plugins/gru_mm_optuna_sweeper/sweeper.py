"""The Sweeper Hydra discovers; the work lives in private modules, imported only when a sweep runs."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from ._job import TellingTask


class OptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None
        self.task: TellingTask | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task = TellingTask(task_function)  # each trial tells the study itself, as soon as it ends
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=self.task
        )

    def sweep(self, arguments: list[str]) -> Any:
        from ._impl import run_sweep  # optuna and mlflow load only here, not at plugin discovery

        assert self.config is not None and self.launcher and self.task, "setup() must run before sweep()"
        return run_sweep(self.options, self.config, self.launcher, self.task, arguments)
