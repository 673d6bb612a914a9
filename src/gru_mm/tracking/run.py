"""One MLflow run per training run: logger, params, tags, config and checkpoint artifacts."""

from __future__ import annotations

import logging
import secrets
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from gru_mm.config import flatten
from gru_mm.paths import IN_CHECKOUT, PROJECT_ROOT
from gru_mm.tracking.outbox import Outbox
from gru_mm.tracking.store import artifact_location, check_reachable, resolve_tracking_uri
from hydra_plugins.gru_mm_optuna_sweeper._storage import redact, redact_values

log = logging.getLogger("gru_mm.tracking")


class _OutboxClient:
    """An MlflowClient whose log_batch goes through an `Outbox`; while the server is known to be
    down, its other calls fail at once with a ConnectionError instead of retrying for minutes."""

    def __init__(self, client, tracking_uri: str):
        self._client, self._uri, self.outbox = client, tracking_uri, None

    def log_batch(self, run_id: str, metrics=(), params=(), tags=(), **_ignored) -> None:
        if self.outbox is None:
            self.outbox = Outbox(self._client, self._uri)
        self.outbox.put(run_id, metrics, params, tags)

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr) or self.outbox is None or not self.outbox.down:
            return attr

        def checked(*args, **kwargs):
            check_reachable(self._uri, timeout=2.0)  # still down: a ConnectionError naming it, now
            return attr(*args, **kwargs)

        return checked

    def __getstate__(self):  # spawned processes (ddp_spawn) get the client, not the thread
        return {"_client": self._client, "_uri": self._uri, "outbox": None}

    def __setstate__(self, state):
        self.__dict__.update(state)


class BufferedMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, with metrics and params sent by a background `Outbox`.

    When fitting or testing ends, it waits up to `wait_s` for them to arrive. What has not arrived
    by then is saved to `<spill_dir>/mlflow_unsent.jsonl`, and a ConnectionError says how to send it.
    """

    def __init__(self, *args, spill_dir: str | None = None, wait_s: float = 120.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.spill_path = Path(spill_dir or ".") / "mlflow_unsent.jsonl"
        self.wait_s = wait_s
        self._mlflow_client = _OutboxClient(self._mlflow_client, self._tracking_uri)

    def flush(self) -> None:
        """Everything queued reaches the server, or is saved and a ConnectionError says where."""
        outbox = self._mlflow_client.outbox
        if outbox is None or outbox.flush(1.0):
            return
        log.info("waiting up to %.0f s for MLflow tracking server %s", self.wait_s, self._tracking_uri)
        if outbox.flush(self.wait_s):
            return
        n = outbox.spill(self.spill_path)
        raise ConnectionError(
            f"MLflow tracking server {self._tracking_uri} stopped answering: {n} batch(es) of metrics and "
            f"params are saved in {self.spill_path}; send them with `python -m gru_mm.tracking.outbox "
            f"{self.spill_path}` once it answers (the checkpoints are on disk in the run folder)"
        )

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self.flush()
        super().finalize(status)


def make_mlflow_logger(
    experiment_name: str,
    tracking_uri: str | None = None,
    root: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    spill_dir: str | None = None,
    wait_s: float = 120.0,
) -> MLFlowLogger:
    uri = resolve_tracking_uri(tracking_uri, root)
    check_reachable(uri)
    return BufferedMLFlowLogger(
        experiment_name=experiment_name,
        tracking_uri=uri,
        run_name=run_name,
        run_id=run_id,
        tags=tags,
        artifact_location=artifact_location(uri, experiment_name),
        log_model=False,  # we log the best checkpoint ourselves, once, after fitting
        spill_dir=spill_dir,
        wait_s=wait_s,
    )


# Overrides that say nothing about what a run does (where files go, sweep bookkeeping) or are in the name already.
_NAME_NOISE = ("paths.", "++trial.", "hydra.", "experiment_name=", "run_name=")


def default_run_name(experiment: str, overrides: list[str], now: datetime | None = None) -> str:
    """`<experiment> <key overrides> <MM-DD HH:MM:SS> <4 hex digits>`, e.g. `avdigits debug=smoke 11-27 16:58:03 3fa2`.

    MLflow's own names repeat from run to run: it draws them from Python's `random`, which training has
    seeded. The hex digits come from the OS (not seeded), so two runs started in the same second differ.
    """
    keys = " ".join(o for o in overrides if not o.startswith(_NAME_NOISE))
    stamp = (now or datetime.now()).strftime("%m-%d %H:%M:%S")
    return " ".join(part for part in (experiment, keys[:200], stamp, secrets.token_hex(2)) if part)


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
    if not IN_CHECKOUT:  # an installed gru-mm: the working directory's repository is not this code's
        return "unknown"
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
    log.info("MLflow: run '%s' in experiment '%s'", client.get_run(run_id).info.run_name, logger._experiment_name)
    # No passwords of storage or tracking URLs; set again, as the run was created with them (and named).
    tags = redact_values(tags | {"mlflow.runName": client.get_run(run_id).info.run_name})
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    # MLFlowLogger.log_hyperparams truncates long values and batches the calls; hydra's own node is noise here.
    params = redact_values({k: v for k, v in flatten(cfg).items() if not k.startswith("hydra/")})
    logger.log_hyperparams(params)
    client.log_text(run_id, redact(OmegaConf.to_yaml(cfg, resolve=True)), "config/config.yaml")


def log_resume(logger: MLFlowLogger, checkpoint: str | Path, tags: dict[str, str]) -> None:
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "gru_mm.resumed_from", str(checkpoint))
    client.set_tag(run_id, "gru_mm.resume_command", tags["gru_mm.command"])


def log_checkpoint(logger: MLFlowLogger, path: str | Path, artifact_dir: str = "checkpoints") -> None:
    if path and Path(path).is_file():
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_dir)
