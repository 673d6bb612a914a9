"""The sweep loop: ask n_jobs trials, launch them through Hydra's launcher, tell the results, until
n_trials count."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from . import _report, _space, _storage, _study
from ._job import TellingTask
from ._settings import Settings, parse_settings

log = logging.getLogger(__name__)


def run_sweep(
    options: dict[str, Any], config: DictConfig, launcher: Launcher, task: TellingTask, arguments: list[str]
) -> Any:
    _storage.redact_log_records()  # the launcher logs each job's overrides, which may hold a tracking URL
    s = parse_settings(options, config)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")

    space = _space.build_search_space(s.params, arguments)
    grid = s.sampler["_target_"].rsplit(".", 1)[-1] == "GridSampler"
    n_trials = s.n_trials
    extra: dict[str, Any] = {}
    if grid:
        extra["search_space"] = space.grid()
        n_grid = 1
        for values in extra["search_space"].values():
            n_grid *= len(values)
        n_trials = min(n_trials, n_grid)

    url = _storage.resolve_storage_url(s.storage, sweep_dir)
    storage = _storage.open_storage(url)
    study = optuna.create_study(
        storage=storage, study_name=s.study_name, directions=s.directions, load_if_exists=True
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != s.directions:
        raise ValueError(
            f"hydra.sweeper.direction is {s.directions} but study '{s.study_name}' in {_storage.redact(url)} "
            f"was created with {stored}; use another study_name."
        )
    study.sampler = _make_sampler(s, extra, n_existing=len(study.get_trials(deepcopy=False)))
    if s.pruner is not None:
        study.set_user_attr(_storage.PRUNER_ATTR, s.pruner)
    log.info(
        f"Study '{s.study_name}' in {_storage.redact(url)}, sampler {type(study.sampler).__name__}, "
        f"directions {s.directions}, {n_trials} trials, {s.n_jobs} at a time"
    )

    task.configure(metric=s.metric, grid=grid, max_retries=s.max_retries)
    parent = _parent_run(s, url) if s.mlflow else None

    owner = _study.owner_id()
    study_id = storage.get_study_id_from_name(s.study_name)
    identity = [
        f"++trial.study_name={s.study_name}",
        f"++trial.storage={_space.format_value(_storage_override(url))}",
        f"++trial.mlflow_parent_run_id={parent.run_id if parent else 'null'}",
    ]
    while True:
        # Checked before every batch: a sweeper on another host may have died while this one ran.
        interrupted = _study.recover_interrupted(study, storage, grid, s.stale_after_s, s.max_retries)
        if parent is not None:
            parent.kill_children(interrupted)
            parent.send_failures()  # failures kept while the tracking server was away
        todo = n_trials - _study.n_finished(study)
        if todo <= 0:
            break
        trials = [study.ask() for _ in range(min(todo, s.n_jobs))]
        batch = []
        for trial in trials:
            trial.set_user_attr(_study.OWNER, owner)
            values = {name: _space.suggest(trial, name, p.distribution) for name, p in space.params.items()}
            batch.append([*space.overrides(values), *identity, f"++trial.number={trial.number}"])
        # Job numbers follow trial numbers, so a resumed sweep does not reuse the job folders of
        # earlier trials.
        trial_ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]
        with _study.Heartbeat(storage, trial_ids, interval_s=min(30.0, s.stale_after_s / 4)):
            returns = launcher.launch(batch, initial_job_idx=trials[0].number)
        for trial, ret, trial_id in zip(trials, returns, trial_ids, strict=True):
            if (
                storage.get_trial(trial_id).state == TrialState.RUNNING
            ):  # its process could not tell the study
                value, error = _outcome(ret)
                _study.record(
                    study,
                    storage,
                    trial.number,
                    value,
                    error,
                    metric=s.metric,
                    grid=grid,
                    max_retries=s.max_retries,
                )
            done = storage.get_trial(trial_id)
            if parent is not None and done.state == TrialState.FAIL:
                parent.fail_child(done)

    summary = _report.best_summary(study)
    (sweep_dir / "optimization_results.yaml").write_text(
        yaml.safe_dump(_plain_summary(summary), sort_keys=False)
    )
    if parent is not None:
        parent.send_failures()
        parent.finish(study, summary)
    log.info(f"Best: {summary}")
    return summary


def _storage_override(url: str) -> str:
    """What trials receive as trial.storage: the URL, or, when it holds a password, a reference to it in the
    environment, so the password is in no override, job folder, launcher log line or MLflow tag."""
    if _storage.redact(url) == url:
        return url
    os.environ[_storage.SECRET_ENV] = url  # inherited by local jobs, and by SLURM jobs (sbatch --export=ALL)
    return f"${{oc.env:{_storage.SECRET_ENV}}}"


def _outcome(ret: JobReturn) -> tuple[Any, BaseException | None]:
    """The job's return value, or the exception it raised (Hydra re-raises it from return_value)."""
    try:
        return ret.return_value, None
    except Exception as e:
        return None, e


def _make_sampler(s: Settings, extra: dict[str, Any], n_existing: int) -> optuna.samplers.BaseSampler:
    cfg = dict(s.sampler)
    if cfg.get("seed") is not None:
        cfg["seed"] = int(cfg["seed"]) + n_existing  # a resumed study must not replay its first suggestions
    try:
        return instantiate(cfg, **extra)
    except Exception as e:
        cause = e.__cause__ or e
        raise ValueError(f"hydra.sweeper.sampler ({cfg['_target_']}) could not be built: {cause}") from e


def _parent_run(s: Settings, url: str):
    from gru_mm.tracking.store import check_reachable, resolve_tracking_uri

    from ._mlflow import ParentRun

    tags = {
        "optuna.storage": _storage.redact(url),
        "optuna.sampler": s.sampler["_target_"],
        "optuna.directions": ",".join(s.directions),
    }
    uri = resolve_tracking_uri(s.mlflow_tracking_uri, s.mlflow_root)
    try:
        check_reachable(uri)  # seconds, not MLflow's minutes of retries, when a server is down
    except ConnectionError as err:
        raise ConnectionError(f"{err} (a sweep without MLflow: hydra.sweeper.mlflow=false)") from None
    return ParentRun(uri, s.mlflow_experiment, s.study_name, tags)


def _plain_summary(summary: dict[str, Any]) -> Any:
    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, Sequence) and not isinstance(x, str):
            return [plain(v) for v in x]
        return x.item() if hasattr(x, "item") else x

    return plain(summary)
