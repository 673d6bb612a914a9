"""One MLflow run per training run: logger, params, tags, config and checkpoint artifacts."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

from gru_mm.config import flatten
from gru_mm.paths import PROJECT_ROOT
from gru_mm.tracking.store import artifact_location, check_reachable, resolve_tracking_uri


def make_mlflow_logger(
    experiment_name: str,
    tracking_uri: str | None = None,
    root: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
) -> MLFlowLogger:
    uri = resolve_tracking_uri(tracking_uri, root)
    check_reachable(uri)
    return MLFlowLogger(
        experiment_name=experiment_name,
        tracking_uri=uri,
        run_name=run_name,
        run_id=run_id,
        tags=tags,
        artifact_location=artifact_location(uri, experiment_name),
        log_model=False,  # we log the best checkpoint ourselves, once, after fitting
    )


def mlflow_logger(loggers: list) -> MLFlowLogger | None:
    """The MLflow logger among a run's loggers, if any."""
    return next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)


def run_location(logger: MLFlowLogger) -> str:
    """Where to look at the run: its page on a tracking server, else how to serve the local store."""
    uri = logger._tracking_uri
    page = f"#/experiments/{logger.experiment_id}/runs/{logger.run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"run {logger.run_id} in {uri}: `mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{page}"


def check_tracking(logger_cfg: Any) -> None:
    """Probe the MLflow store that the `mlflow` logger config would use (no-op for other loggers)."""
    node = (logger_cfg or {}).get("mlflow")
    if node is not None:
        check_reachable(resolve_tracking_uri(node.get("tracking_uri"), node.get("root")))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(overrides: list[str]) -> dict[str, str]:
    return {
        "gru_mm.overrides": " ".join(overrides) or "(none)",
        "gru_mm.command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "mlflow.source.git.commit": git_commit(),
    }


def log_run_start(logger: MLFlowLogger, cfg: DictConfig, tags: dict[str, str]) -> None:
    """Params (the flattened resolved config), tags and the config itself as an artifact."""
    client, run_id = logger.experiment, logger.run_id
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    # MLFlowLogger.log_hyperparams truncates long values and batches the calls; hydra's own node is noise here.
    params = {k: v for k, v in flatten(cfg).items() if not k.startswith("hydra/")}
    logger.log_hyperparams(params)
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")


def log_resume(logger: MLFlowLogger, checkpoint: str | Path, tags: dict[str, str]) -> None:
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "gru_mm.resumed_from", str(checkpoint))
    client.set_tag(run_id, "gru_mm.resume_command", tags["gru_mm.command"])


def log_checkpoint(logger: MLFlowLogger, path: str | Path, artifact_dir: str = "checkpoints") -> None:
    if path and Path(path).is_file():
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_dir)
