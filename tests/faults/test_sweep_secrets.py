"""Passwords in the sweep's storage URL and in the tracking URL reach no trial param, tag, config artifact
or log line. sqlite takes no password: the sweep's URLs carry one as a query argument (`?password=...`),
which SQLAlchemy and MLflow ignore for sqlite but which is redacted like any other; user:password@ URLs go
through the same logging path in the second test, with a real MLflow logger on a sqlite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

import cli_zygote
from gru_mm.tracking.run import log_run_start
from sweep.sweep_cli_testlib import sweep_command, sweep_env
from sweep.sweep_testlib import load_study

STORAGE_SECRET, TRACKING_SECRET = "db-s3cret-pw", "tr4ck-s3cret-pw"


def everything_logged(client: MlflowClient, tmp_path: Path) -> list[str]:
    """Every param and tag of every run (the run name is the tag mlflow.runName), and each config artifact."""
    texts = []
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        texts += [f"{k}={v}" for k, v in (*run.data.params.items(), *run.data.tags.items())]
        texts.append(run.info.run_name or "")
        for artifact in client.list_artifacts(run.info.run_id, "config"):
            texts.append(
                Path(client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path))).read_text()
            )
    return texts


@pytest.mark.slow
def test_no_password_of_a_sweep_reaches_params_tags_or_logs(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}?password={STORAGE_SECRET}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}?password={TRACKING_SECRET}"
    proc = cli_zygote.run(
        sweep_command(
            tmp_path,
            "hydra.sweeper.n_trials=1",
            "optimizer.lr=choice(0.001,0.002)",
            f'hydra.sweeper.storage="{storage}"',
            f'logger.mlflow.tracking_uri="{tracking}"',
        ),
        env=sweep_env(),
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (trial,) = load_study(storage, "faults").trials
    assert trial.params and trial.state.name == "COMPLETE", (
        "the trials reached the study through the password URL"
    )

    logs = [proc.stdout, proc.stderr, *(p.read_text() for p in (tmp_path / "sweep").rglob("*.log"))]
    logged = everything_logged(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path)
    assert len(logged) > 20, "the trial's run and the sweep's parent run hold params and tags"
    for secret in (STORAGE_SECRET, TRACKING_SECRET):
        leaks = [line for text in logs + logged for line in text.splitlines() if secret in line]
        assert not leaks, f"{secret} leaked: {leaks[:3]}"
    # Redacted, not dropped: the trial's params still say which storage and store it used.
    assert f"trial/storage=sqlite:///{tmp_path / 'optuna.db'}?password=***" in logged
    assert f"logger/mlflow/tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}?password=***" in logged


def test_log_run_start_redacts_user_password_urls(tmp_path: Path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = OmegaConf.create(
        {
            "logger": {"mlflow": {"tracking_uri": "https://alice:tr4ck-pw@mlflow.example.org"}},
            "trial": {"storage": "postgresql://bob:db-pw@db.example.org:5432/optuna"},
        }
    )
    command = "gru-mm-train -m hydra.sweeper.storage=postgresql://bob:db-pw@db.example.org:5432/optuna"
    tags = {"gru_mm.command": command}  # as gru-mm-train gives them: to the logger, then to log_run_start
    logger = MLFlowLogger(  # artifacts in tmp too (a sqlite store's default root is ./mlruns)
        "secrets",
        tracking_uri=store,
        artifact_location=str(tmp_path / "artifacts"),
        run_name=f"run of {command}",
        tags=tags,
    )
    log_run_start(logger, cfg, tags)

    logged = everything_logged(MlflowClient(store), tmp_path)
    assert not [line for line in logged if "tr4ck-pw" in line or "db-pw" in line]
    assert "trial/storage=postgresql://bob:***@db.example.org:5432/optuna" in logged
    assert "logger/mlflow/tracking_uri=https://alice:***@mlflow.example.org" in logged
