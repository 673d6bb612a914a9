"""A sweep whose trials run as SLURM jobs (hydra/launcher=submitit_slurm) on a real cluster.

Start one with `scripts/cluster/start_slurm.sh` (root, Debian 12) and export the SLURM_CONF it prints.
"""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sweep_testlib import app_env, load_study, run_app, slurm_or_skip, sqlite_storage


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.xdist_group("slurm")  # one test at a time on the one SLURM cluster (make test runs in parallel)
def test_trials_run_as_slurm_jobs(tmp_path: Path):
    slurm_or_skip()
    run_app(
        tmp_path,
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.cpus_per_task=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "x=interval(-2, 2)",
        timeout=300,
    )
    trials = load_study(sqlite_storage(tmp_path)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    job_logs = list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2, "each trial should have run as its own SLURM job"

    client = MlflowClient(app_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("sweep-test").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("gru_mm.sweep_role") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["optuna.trial_number"] for r in children) == ["0", "1"]
    assert {r.info.status for r in children} == {"FINISHED"}
