"""A sweep of 4 trials, 2 at a time on sqlite, killed mid-way and run again: exactly 4 finished trials."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sweep_testlib import app_command, app_env, load_study, run_app, sqlite_storage

COMMAND = (
    "hydra/launcher=submitit_local",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.n_jobs=2",
    "x=interval(-2, 2)",
    "y=choice(-3, -2, 0)",
    "sleep_s=2",
)


def _wait_for_second_batch(storage: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Return once 2 trials are complete and the next batch is running (the moment to kill the sweep)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        states = []
        if Path(storage.removeprefix("sqlite:///")).exists():  # opening it earlier would create it
            with contextlib.suppress(Exception):  # the sweeper may still be creating the study
                states = [t.state for t in load_study(storage).get_trials(deepcopy=False)]
        if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
            return
        time.sleep(0.2)
    raise AssertionError("the second batch of trials did not start in time")


@pytest.mark.slow
def test_killed_sweep_resumes_to_exactly_n_trials(tmp_path: Path):
    storage = sqlite_storage(tmp_path)
    proc = subprocess.Popen(
        app_command(tmp_path / "sweep", *COMMAND),
        env=app_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the submitit jobs too, like Ctrl-C/scancel
    )
    try:
        _wait_for_second_batch(storage, proc)
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    interrupted = [t.number for t in load_study(storage).trials if t.state == TrialState.RUNNING]
    assert interrupted, "the kill should leave running trials behind"

    run_app(tmp_path, *COMMAND)

    trials = load_study(storage).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    complete = sorted(t.number for t in trials if t.state == TrialState.COMPLETE)
    assert len(complete) == 4
    failed = {t.number: t for t in trials if t.state == TrialState.FAIL}
    assert sorted(failed) == sorted(interrupted) and all(t.user_attrs["interrupted"] for t in failed.values())
    retried = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    assert sorted(retried) == sorted(interrupted)
    assert all(retried[n].params == failed[n].params for n in interrupted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    client = MlflowClient(app_env(tmp_path)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("gru_mm.sweep_role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["optuna.study_name"] == "sweep_app"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = sorted(
        int(r.data.tags["optuna.trial_number"]) for r in children if r.info.status == "FINISHED"
    )
    assert finished == complete
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}
    assert len(children) == len(runs) - 1
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/trials.csv", "optuna/optimization_history.png", "optuna/best.json"} <= artifacts
    assert "best_value" in parent.data.metrics and "best_params.x" in parent.data.tags
