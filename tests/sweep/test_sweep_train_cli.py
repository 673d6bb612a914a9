"""The real training CLI under the Optuna sweeper: a parent MLflow run and one child run per trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli


@pytest.mark.slow
def test_sweep_of_the_training_cli_logs_parent_and_children(isolated_root: Path):
    proc = run_cli(
        "gru-mm-train",
        "-m",
        "hparams_search=avdigits",
        "debug=smoke",
        "test=false",
        "hydra.sweeper.n_trials=2",
        f"paths.root={isolated_root}",
        "hydra.sweeper.study_name=cli",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    storage = f"sqlite:///{isolated_root / 'logs' / 'sweeps' / 'cli' / 'optuna.db'}"
    study = optuna.load_study(study_name="cli", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2

    client = MlflowClient(f"sqlite:///{isolated_root / 'mlflow.db'}")  # the trials' store (paths.root)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "the parent run must be in the trials' store"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["optuna.trial_number"] for r in children) == ["0", "1"]
    assert {r.data.tags["optuna.study_name"] for r in children} == {"cli"}
    assert {r.info.status for r in children} == {"FINISHED"}
    values = sorted(t.value for t in study.trials)
    assert sorted(r.data.metrics["val/acc"] for r in children) == pytest.approx(values)
