"""Structured configs: `hydra/sweeper=optuna` and its samplers
`hydra/sweeper/sampler=tpe|random|grid|cmaes|nsgaii`."""

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = 123  # a resumed study adds its trial count, so it does not replay old suggestions
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    multivariate: bool = False  # model parameters jointly (Optuna marks it experimental)


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = 123


@dataclass
class GridSamplerConf:
    # The sweeper fills search_space from the params; every parameter must be discrete.
    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = 123  # shuffles the grid order


@dataclass
class CmaEsSamplerConf:
    # Needs the `cmaes` package; categorical parameters fall back to independent random sampling.
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = 123
    n_startup_trials: int = 1  # random trials before CMA-ES starts
    sigma0: float | None = None  # initial step size; null: a sixth of the search space


@dataclass
class NSGAIISamplerConf:
    # The usual choice for multi-objective sweeps.
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = 123
    population_size: int = 50


def _median_pruner() -> dict[str, Any]:
    return {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 1}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.gru_mm_optuna_sweeper.sweeper.OptunaSweeper"
    # The sweeper builds sampler and pruner itself (seed offset, grid search space).
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    sampler: Any = MISSING  # hydra/sweeper/sampler=tpe|random|grid|cmaes|nsgaii
    direction: Any = "minimize"  # minimize | maximize, or a list of them for several objectives
    study_name: str | None = None  # null: the task's name (hydra.job.name)
    # null: sqlite file optuna.db in hydra.sweep.dir; or a database URL; or journal:PATH (relative: in
    # the sweep dir)
    storage: str | None = None
    n_trials: int = 20  # finished trials wanted (complete, pruned or failed); a re-run resumes up to this
    n_jobs: int = 2  # trials launched at a time through hydra/launcher
    # A RUNNING trial of a sweeper on another host counts as dead (failed, retried) after this long
    # without its heartbeat; on this host the sweeper's pid decides.
    stale_after_s: float = 300
    # A trial interrupted with its sweeper, or failed on a ConnectionError, is run again with the same
    # parameters up to this many times; then it counts as a finished FAIL.
    max_retries: int = 2
    params: dict[str, Any] | None = None  # search space, {key: "interval(a, b)" | "choice(..)" | ...}
    metric: Any = None  # when the task returns a dict: the key (or list of keys) that is the objective
    pruner: Any = field(default_factory=_median_pruner)  # used by the OptunaPruning callback in each trial
    mlflow: bool = True  # one parent run per study, trials as its children
    mlflow_experiment: str | None = None  # null: the task's logger.experiment_name, else "sweeps"
    # null: the task's logger tracking_uri, else MLFLOW_TRACKING_URI, else the task's own default store
    # (<logger.mlflow.root or paths.root>/mlflow.db): the parent run lands where the trials' runs do
    mlflow_tracking_uri: str | None = None


OTHER_PLUGIN = "hydra_plugins.hydra_optuna_sweeper"  # the hydra-optuna-sweeper package: same names, optuna<3


class SweeperConflict(SystemExit):
    """Raised while Hydra scans its plugins, before any app runs: a SystemExit, so the user sees one
    sentence."""


def refuse_the_other_optuna_sweeper() -> None:
    """Both plugins register hydra/sweeper=optuna (and its samplers): which one a sweep gets would depend
    on the order Hydra scans them in, so neither is used."""
    if importlib.util.find_spec(OTHER_PLUGIN) is not None:
        raise SweeperConflict(
            "gru-mm: hydra-optuna-sweeper (hydra_plugins.hydra_optuna_sweeper) is installed next to "
            "gru-mm's Optuna sweeper and both register hydra/sweeper=optuna; uninstall it "
            "(`pip uninstall hydra-optuna-sweeper`: it needs optuna<3, gru-mm's sweeper optuna>=4)."
        )


refuse_the_other_optuna_sweeper()
_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="gru_mm")
for _name, _node in {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "grid": GridSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "nsgaii": NSGAIISamplerConf,
}.items():
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="gru_mm")
