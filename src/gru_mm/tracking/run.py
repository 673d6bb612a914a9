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
from gru_mm.tracking.outbox import JOURNAL_NAME, Outbox
from gru_mm.tracking.store import (
    TrackingRejected,
    artifact_location,
    check_reachable,
    rejected_status,
    resolve_tracking_uri,
)
from hydra_plugins.gru_mm_optuna_sweeper._storage import redact, redact_values

log = logging.getLogger("gru_mm.tracking")


class _OutboxClient:
    """An MlflowClient whose log_batch goes through an `Outbox`; while the server is known to be
    down, its other calls fail at once with a ConnectionError instead of retrying for minutes, and a
    refusal for good (HTTP 4xx) of any call is a `TrackingRejected` naming the status."""

    def __init__(self, client, tracking_uri: str, journal: Path | None = None):
        self._client, self._uri, self.journal, self.outbox = client, tracking_uri, journal, None

    def open_outbox(self, journal: Path | None = None, redo_from_step: int | None = None) -> Outbox:
        if self.outbox is not None:
            raise RuntimeError("the outbox is already open: resume it before anything is logged")
        self.journal = journal or self.journal
        self.outbox = Outbox(self._client, self._uri, journal=self.journal, redo_from_step=redo_from_step)
        return self.outbox

    def log_batch(self, run_id: str, metrics=(), params=(), tags=(), **_ignored) -> None:
        (self.outbox or self.open_outbox()).put(run_id, metrics, params, tags)

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def checked(*args, **kwargs):
            if self.outbox is not None and self.outbox.down:
                check_reachable(self._uri, timeout=2.0)  # still down: a ConnectionError naming it, now
            try:
                return attr(*args, **kwargs)
            except Exception as err:
                if (status := rejected_status(err)) is None:
                    raise
                raise TrackingRejected(
                    f"MLflow tracking server {self._uri} refused {name} with HTTP {status} "
                    f"({err}): check the credentials and that the run still exists",
                    status,
                ) from err

        return checked

    def __getstate__(self):  # spawned processes (ddp_spawn) get the client, not the thread
        return {"_client": self._client, "_uri": self._uri, "journal": self.journal, "outbox": None}

    def __setstate__(self, state):
        self.__dict__.update(state)


class BufferedMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, with metrics and params sent by a background `Outbox` whose journal,
    `<outbox_dir>/mlflow_outbox.jsonl`, keeps them on disk until they arrive (a SIGKILL loses none).

    When fitting or testing ends, it waits up to `wait_s` for them to arrive, once: a ConnectionError
    then names the journal and how to send it. When the run fails, its own error is what is raised;
    the journal is named in a warning.
    """

    def __init__(self, *args, outbox_dir: str | None = None, wait_s: float = 120.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.wait_s = wait_s
        self._waited = False  # one wait per run: after it timed out the server is known to be away
        journal = Path(outbox_dir) / JOURNAL_NAME if outbox_dir else None  # None: kept in memory only
        self._mlflow_client = _OutboxClient(self._mlflow_client, self._tracking_uri, journal)

    def resume_outbox(self, run_folder: str | Path, redo_from_step: int | None = None) -> int:
        """Continue the journal of the run being resumed (the folder it started in): what its killed process
        had not sent goes first, into the same run, without the metric points from `redo_from_step` (the
        checkpoint's global step) on, which the resumed run logs again. Returns how many batches were left."""
        outbox = self._mlflow_client.open_outbox(
            Path(run_folder) / JOURNAL_NAME, redo_from_step=redo_from_step
        )
        if outbox.recovered:
            log.info(
                "sending %d batch(es) of metrics the interrupted run had not sent (%s)",
                outbox.recovered,
                outbox.journal_path,
            )
        return outbox.recovered

    def _delivered(self) -> bool:
        """Whether everything queued reached the server, waiting for it at most once per run."""
        outbox = self._mlflow_client.outbox
        if outbox is None or outbox.flush(1.0):
            return True
        if self._waited or outbox.error is not None:
            return False
        self._waited = True
        log.info("waiting up to %.0f s for MLflow tracking server %s", self.wait_s, self._tracking_uri)
        return outbox.flush(self.wait_s)

    def _unsent_sentence(self) -> str:
        outbox = self._mlflow_client.outbox
        path = outbox.journal_path
        if path is None:
            return (
                f"{outbox.pending} batch(es) of metrics and params were not sent "
                "(no outbox_dir to keep them in)"
            )
        return (
            f"{outbox.pending} batch(es) of metrics and params are kept in {path}; they are sent "
            "when the run is resumed (ckpt_path=...), or with "
            f"`python -m gru_mm.tracking.outbox {path}` once it answers"
        )

    def flush(self) -> None:
        """Everything queued reaches the server, or a ConnectionError says where it is kept."""
        if self._delivered():
            return
        outbox = self._mlflow_client.outbox
        if outbox.error is not None:
            raise TrackingRejected(str(outbox.error), outbox.error.status)
        raise ConnectionError(
            f"MLflow tracking server {self._tracking_uri} stopped answering: "
            f"{self._unsent_sentence()} (the checkpoints are on disk in the run folder)"
        )

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if status != "failed":
            self.flush()
            super().finalize(status)
            return
        # The run failed: its own error is what must be shown, so nothing here raises.
        if not self._delivered():
            log.warning(
                "MLflow tracking server %s did not take everything: %s",
                self._tracking_uri,
                self._unsent_sentence(),
            )
            return
        try:
            super().finalize(status)  # marks the run FAILED
        except Exception as err:
            log.warning("could not mark MLflow run %s FAILED: %s", self.run_id, err)


def make_mlflow_logger(
    experiment_name: str,
    tracking_uri: str | None = None,
    root: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    outbox_dir: str | None = None,
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
        outbox_dir=outbox_dir,
        wait_s=wait_s,
    )


# Overrides that say nothing about what a run does (where files go, sweep bookkeeping) or are in the
# name already.
_NAME_NOISE = ("paths.", "++trial.", "hydra.", "experiment_name=", "run_name=")


def default_run_name(experiment: str, overrides: list[str], now: datetime | None = None) -> str:
    """`<experiment> <key overrides> <MM-DD HH:MM:SS> <4 hex digits>`, e.g.
    `avdigits debug=smoke 11-27 16:58:03 3fa2`.

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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
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
    log.info(
        "MLflow: run '%s' in experiment '%s'", client.get_run(run_id).info.run_name, logger._experiment_name
    )
    # No passwords of storage or tracking URLs; set again, as the run was created with them (and named).
    tags = redact_values(tags | {"mlflow.runName": client.get_run(run_id).info.run_name})
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    # MLFlowLogger.log_hyperparams truncates long values and batches the calls; hydra's own node is
    # noise here.
    params = redact_values({k: v for k, v in flatten(cfg).items() if not k.startswith("hydra/")})
    logger.log_hyperparams(params)
    client.log_text(run_id, redact(OmegaConf.to_yaml(cfg, resolve=True)), "config/config.yaml")


def log_resume(logger: MLFlowLogger, checkpoint: str | Path, tags: dict[str, str]) -> None:
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "gru_mm.resumed_from", str(checkpoint))
    client.set_tag(run_id, "gru_mm.resume_command", redact(tags["gru_mm.command"]))


def log_checkpoint(logger: MLFlowLogger, path: str | Path, artifact_dir: str = "checkpoints") -> None:
    if path and Path(path).is_file():
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_dir)
