"""The sweeper's options, checked before anything runs; each error names the hydra.sweeper key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

_STUDY_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass
class Settings:
    directions: list[str]
    study_name: str
    storage: str | None
    n_trials: int
    n_jobs: int
    params: dict[str, Any]
    metric: str | list[str] | None
    sampler: dict[str, Any]
    pruner: dict[str, Any] | None
    mlflow: bool
    mlflow_experiment: str
    mlflow_tracking_uri: str | None
    mlflow_root: str | None
    stale_after_s: float
    max_retries: int


# Where the task config may name its MLflow experiment and store; the trials' runs must land in the same one.
EXPERIMENT_KEYS = ("logger.experiment_name", "logger.mlflow.experiment_name", "experiment_name")
TRACKING_URI_KEYS = ("logger.tracking_uri", "logger.mlflow.tracking_uri")
# Where a task without a URI keeps its default sqlite store (gru-mm: <paths.root>/mlflow.db).
STORE_ROOT_KEYS = ("logger.mlflow.root", "logger.root", "paths.root")


def _first(config: DictConfig, keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = OmegaConf.select(config, key, default=None, throw_on_missing=False)
        if value is not None:
            return value
    return None


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def parse_settings(options: Mapping[str, Any], config: DictConfig) -> Settings:
    o = {k: _plain(v) for k, v in options.items()}
    direction = o.get("direction", "minimize")
    directions = [direction] if isinstance(direction, str) else list(direction or [])
    directions = [str(d).lower() for d in directions]
    if not directions or any(d not in ("minimize", "maximize") for d in directions):
        raise ValueError(
            f"hydra.sweeper.direction must be minimize, maximize or a list of them, got {direction!r}."
        )

    study_name = o.get("study_name") or str(config.hydra.job.name)
    if not _STUDY_NAME.fullmatch(study_name):
        raise ValueError(
            f"hydra.sweeper.study_name may hold letters, digits, '_', '-' and '.', got {study_name!r}."
        )
    if not isinstance(o.get("stale_after_s", 300), int | float) or o.get("stale_after_s", 300) <= 0:
        raise ValueError(
            f"hydra.sweeper.stale_after_s must be a positive number, got {o['stale_after_s']!r}."
        )
    for key in ("n_trials", "n_jobs"):
        if not isinstance(o.get(key), int) or o[key] < 1:
            raise ValueError(f"hydra.sweeper.{key} must be a positive integer, got {o.get(key)!r}.")

    max_retries = o.get("max_retries", 2)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"hydra.sweeper.max_retries must be an integer >= 0, got {max_retries!r}.")

    metric = o.get("metric")
    if isinstance(metric, list) and len(metric) != len(directions):
        raise ValueError(
            f"hydra.sweeper.metric lists {len(metric)} keys "
            f"but hydra.sweeper.direction has {len(directions)}."
        )
    sampler = o.get("sampler")
    if not isinstance(sampler, dict) or "_target_" not in sampler:
        raise ValueError(f"hydra.sweeper.sampler must be a config with _target_, got {sampler!r}.")
    pruner = o.get("pruner")
    if pruner is not None and (not isinstance(pruner, dict) or "_target_" not in pruner):
        raise ValueError(f"hydra.sweeper.pruner must be null or a config with _target_, got {pruner!r}.")

    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    experiment = o.get("mlflow_experiment") or _first(task, EXPERIMENT_KEYS) or "sweeps"
    uri = o.get("mlflow_tracking_uri") or _first(task, TRACKING_URI_KEYS)
    return Settings(
        directions=directions,
        study_name=study_name,
        storage=o.get("storage"),
        n_trials=o["n_trials"],
        n_jobs=o["n_jobs"],
        params=dict(o.get("params") or {}),
        metric=metric,
        sampler=sampler,
        pruner=pruner,
        mlflow=bool(o.get("mlflow", True)),
        mlflow_experiment=str(experiment),
        mlflow_tracking_uri=uri,
        mlflow_root=None if uri else _first(task, STORE_ROOT_KEYS),
        stale_after_s=float(o.get("stale_after_s", 300)),
        max_retries=max_retries,
    )
