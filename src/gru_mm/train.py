"""`gru-mm-train`: compose the config, build data, model, trainer and logger, fit, test."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from gru_mm import checkpoints
from gru_mm.checkpoints.resume import resumed_config
from gru_mm.config import ConfigError, check_config, register_resolvers, silence_known_warnings
from gru_mm.data.sources.base import DataError
from gru_mm.data.validation import log_report
from gru_mm.evaluation.report import report as evaluation_report
from gru_mm.models import lr_find
from gru_mm.models.build import build_datamodule, build_module, check_monitors, check_pretrained_files
from gru_mm.nn.onednn_cache import disable_primitive_cache
from gru_mm.paths import CONF_DIR
from gru_mm.serving.mlflow_model import log_model
from gru_mm.tracking.lineage import log_training_data
from gru_mm.tracking.run import (
    BufferedMLFlowLogger,
    check_tracking,
    default_run_name,
    log_checkpoint,
    log_resume,
    log_run_start,
    mlflow_logger,
    run_location,
    run_tags,
)
from hydra_plugins.gru_mm_optuna_sweeper._storage import redact, redact_log_records

log = logging.getLogger("gru_mm.train")
register_resolvers()
silence_known_warnings()


def _hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _multirun_job_name() -> str | None:
    """Under -m, name each job's run by its number and overrides (MLflow's random names repeat: same seed)."""
    if not _is_multirun():
        return None
    job = HydraConfig.get().job
    overrides = " ".join(
        o for o in HydraConfig.get().overrides.task if not o.startswith(("++trial.", "paths."))
    )
    return f"#{job.num} {overrides}"[:250]


def build_loggers(cfg: DictConfig, run_id: str | None, tags: dict[str, str]) -> list:
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        kwargs = {"run_id": run_id, "tags": tags} if name == "mlflow" else {}
        if name == "mlflow" and not node.get("run_name"):  # MLflow's own names repeat: it draws them seeded
            kwargs["run_name"] = _multirun_job_name() or default_run_name(
                cfg.experiment_name, _hydra_overrides()
            )
        loggers.append(hydra.utils.instantiate(node, **kwargs))
    return loggers


def build_callbacks(cfg: DictConfig, ckpt_dir: Path | None) -> list[pl.Callback]:
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if name == "learning_rate_monitor" and not cfg.get("logger"):
            continue  # it has nowhere to log, and Lightning refuses it without a logger (logger=none)
        kwargs = {"dirpath": str(ckpt_dir)} if name == "model_checkpoint" and ckpt_dir else {}
        callbacks.append(hydra.utils.instantiate(node, **kwargs))
    return callbacks


def train(cfg: DictConfig) -> float | None:
    """Fit and test; returns the value of `cfg.optimized_metric` (what a sweeper optimises)."""
    check_config(cfg)
    check_tracking(cfg.get("logger"))  # a dead tracking server fails now, before any data is read
    ckpt_path = cfg.get("ckpt_path") or requeued_checkpoint(cfg)
    resume = checkpoints.resolve(ckpt_path, cfg.paths.log_dir, cfg.experiment_name, unfinished_only=True)
    meta = checkpoints.read_meta(resume) if resume else {}
    if resume:  # the checkpoint's own config, checked against the allow-list before anything is built
        cfg = resumed_config(cfg, meta.get("config") or {}, resume)
    if resume is None:
        check_pretrained_files(cfg)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    report = datamodule.validate()  # reads every sample (or its cache); bad data fails here, listed
    module = build_module(cfg, datamodule=datamodule, pretrained=resume is None)  # resuming: the checkpoint's
    check_monitors(cfg, datamodule.task)
    tags = run_tags(_hydra_overrides()) | trial_tags(cfg.get("trial"))
    loggers = build_loggers(cfg, meta.get("mlflow_run_id"), tags)
    # A resumed run keeps writing checkpoints where it started, so `last` stays the newest.
    callbacks = build_callbacks(cfg, resume.parent if resume else None)
    callbacks.append(checkpoints.RandomState())  # RNG states in every checkpoint: a resume draws alike
    # checkpoints are written atomically and read back with weights_only, whoever asks
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=[checkpoints.AtomicCheckpointIO()]
    )
    check_process_launch(trainer)
    range_test = lr_find.wanted(cfg, resume is not None, trainer.world_size)

    mlflow = mlflow_logger(loggers)
    if resume and isinstance(mlflow, BufferedMLFlowLogger) and trainer.is_global_zero:
        # What the interrupted process queued and never sent goes first, into the same run; its journal
        # is in the run folder where it started (checkpoints/ is in there), which this run goes on using.
        mlflow.resume_outbox(resume.parent.parent, redo_from_step=checkpoints.load(resume).get("global_step"))
    module.run_meta = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "experiment_name": cfg.experiment_name,
        "mlflow_run_id": mlflow.run_id if mlflow else None,
    }
    if mlflow and trainer.is_global_zero:
        if resume:  # the run already holds params and config; record how it was continued
            log_resume(mlflow, resume, tags)
        else:
            log_run_start(mlflow, cfg, tags)
        log_report(mlflow, report)
        log_training_data(mlflow, datamodule)  # the data's fingerprint as the run's dataset digest

    if range_test:
        lr_find.find_lr(cfg, module, datamodule, mlflow if trainer.is_global_zero else None)
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True
        )
    except Exception as err:  # Lightning marks the run FAILED; say why there, and what is kept
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        if last:
            err.add_note(f"the last checkpoint is kept: {last}")
        if mlflow and trainer.is_global_zero:
            with contextlib.suppress(ConnectionError):  # the server is what failed: the error says so
                mlflow.experiment.set_tag(
                    mlflow.run_id, "gru_mm.error", f"{type(err).__name__}: {err}"[:5000]
                )
        raise
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and ckpt_cb.dirpath and not trainer.interrupted and trainer.is_global_zero:
        checkpoints.mark_finished(ckpt_cb.dirpath)  # ckpt_path=last resumes unfinished runs only
    # Read the objective now: testing replaces callback_metrics with the test metrics.
    objective = _fit_objective(cfg.optimized_metric, trainer)
    best = ckpt_cb.best_model_path if ckpt_cb else ""
    if cfg.get("test", True):
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        if trainer.is_global_zero:  # ablation, per-class table and plots of the tested weights
            evaluation_report(module, datamodule, mlflow, trainer.strategy.root_device, best or None)
    if mlflow and trainer.is_global_zero and best:
        log_checkpoint(mlflow, best)
        log.info("best checkpoint: %s", best)
        if cfg.get("log_model", True):  # load with mlflow.pyfunc.load_model("runs:/<run id>/model")
            try:
                log_model(mlflow, best, registered_model_name=cfg.get("registered_model_name"))
            except Exception as err:  # an extra after the checkpoint is safely logged: warn, keep the run
                log.warning("could not log the MLflow model of %s (the checkpoint is logged): %s", best, err)
    if mlflow and trainer.is_global_zero:
        log.info("MLflow: %s", run_location(mlflow))

    if objective is None:  # e.g. optimized_metric=test/acc
        objective = trainer.callback_metrics.get(cfg.optimized_metric)
    return None if objective is None else float(objective)


def _fit_objective(metric: str, trainer: pl.Trainer):
    """The best value of the checkpoint monitor when that is the metric, else its last value."""
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and ckpt_cb.monitor == metric and ckpt_cb.best_model_score is not None:
        return ckpt_cb.best_model_score
    return trainer.callback_metrics.get(metric)


def check_process_launch(trainer: pl.Trainer) -> None:
    """Refuse multi-process training that would re-run a whole multirun (-m) once per extra process.

    Lightning's `ddp` (start_method popen) starts ranks 1.. by re-running the command line, which under -m is
    the sweep itself (Lightning #11300); SLURM or torchrun starting the processes, or `spawn`, are safe.
    """
    if not _is_multirun():
        return
    strategy = trainer.strategy
    relaunches = isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher)
    if relaunches and not strategy.cluster_environment.creates_processes_externally:
        raise ConfigError(
            f"trainer.strategy: ddp with {trainer.world_size} processes under multirun (-m) would re-run the "
            "whole sweep in every extra process; use hydra/launcher=submitit_slurm with "
            "hydra.launcher.tasks_per_node=trainer.devices (SLURM starts the processes) or "
            "trainer.strategy.start_method=spawn (see docs/cluster.md)."
        )


def requeued_checkpoint(cfg: DictConfig) -> str | None:
    """This run's own last.ckpt when SLURM runs the job again (requeued after preemption, a time limit or
    `scontrol requeue`): the job restarts in the same folder, and continues where it stopped."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return None
    ckpt_dir = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath")
    last = Path(ckpt_dir) / "last.ckpt" if ckpt_dir else None
    if last is None or not last.is_file():
        log.warning("SLURM requeue %s: no %s yet, starting over", os.environ["SLURM_RESTART_COUNT"], last)
        return None
    log.info("SLURM requeue %s: resuming from %s", os.environ["SLURM_RESTART_COUNT"], last)
    return str(last)


def trial_tags(trial: DictConfig | None) -> dict[str, str]:
    """Tags that make a sweep trial's run a child of the sweep's MLflow run."""
    if not trial or trial.get("number") is None:
        return {}
    tags = {"optuna.study_name": str(trial.study_name), "optuna.trial_number": str(trial.number)}
    if trial.get("mlflow_parent_run_id"):
        tags["mlflow.parentRunId"] = str(trial.mlflow_parent_run_id)
    return tags


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    redact_log_records()  # passwords in storage and tracking URLs never reach a log line
    disable_primitive_cache()  # else CPU memory grows with the training steps (nn/onednn_cache.py)
    try:
        value = train(cfg)
    except (ConfigError, DataError, checkpoints.CheckpointError, ConnectionError, FloatingPointError) as err:
        if _is_multirun() and OmegaConf.select(cfg, "trial.number") is not None:
            raise  # an Optuna trial: the sweeper records it FAIL, with this message, and goes on
        notes = "".join(f"; {n}" for n in getattr(err, "__notes__", []))  # divergence: where and what is kept
        raise SystemExit(redact(f"gru-mm-train: {err}{notes}")) from None
    if value is not None and not math.isfinite(value):
        log.warning("%s is %s", cfg.optimized_metric, value)
    return value


if __name__ == "__main__":
    main()
