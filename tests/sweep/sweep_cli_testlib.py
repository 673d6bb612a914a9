"""Helpers for sweeps of the real gru-mm-train: a fast command, its environment, the trials' MLflow runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
APP_DIR = (
    Path(__file__).resolve().parent / "app"
)  # job_gate.py, the Hydra callback that holds jobs at their start
# Small, fast trials: 2 training batches of 8 samples, 1 validation batch, no test, no logged model.
FAST = ["debug=smoke", "data.source.n_train=32", "data.source.n_val=16", "data.source.n_test=16",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "model.gru.hidden_size=16",
        "test=false", "log_model=false", "~callbacks.system_metrics"]  # fmt: skip


def sweep_command(tmp_path: Path, *args: str, study: str = "faults") -> list[str]:
    """gru-mm-train -m with the Optuna sweeper, everything under tmp_path (study in
    tmp_path/sweep/optuna.db)."""
    return [str(BIN / "gru-mm-train"), "-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"paths.root={tmp_path}", f"hydra.sweeper.study_name={study}", *FAST, *args]  # fmt: skip


def sweep_env(tracking_uri: str | None = None) -> dict[str, str]:
    """The environment, job_gate importable; MLflow at tracking_uri, else the sqlite store under
    paths.root."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APP_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def trial_runs(client: MlflowClient) -> dict[int, object]:
    """The trials' MLflow runs (children of the sweep's run) by trial number."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {int(r.data.tags["optuna.trial_number"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}
