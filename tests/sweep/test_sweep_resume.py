"""A sweep of 4 trials, 2 at a time on sqlite, killed mid-way and run again: exactly 4 finished trials."""

import contextlib
import os
import signal
import sqlite3
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


def _trial_states(db: Path) -> list[str]:
    """Trial states read straight from the sqlite file, read-only: opening it with Optuna while the sweeper is
    still creating its tables would race with that creation."""
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c,
    ):
        return [row[0] for row in c.execute("SELECT state FROM trials")]
    return []


def _wait_for_second_batch(db: Path, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Return once 2 trials are complete and the next batch is running (the moment to kill the sweep)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"the sweep ended before it could be killed:\n{log.read_text()[-5000:]}"
        states = _trial_states(db)
        if states.count("COMPLETE") >= 2 and "RUNNING" in states:
            return
        time.sleep(0.2)
    raise AssertionError("the second batch of trials did not start in time")


@pytest.mark.slow
def test_killed_sweep_resumes_to_exactly_n_trials(tmp_path: Path):
    storage = sqlite_storage(tmp_path)
    log = tmp_path / "first_run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            app_command(tmp_path / "sweep", *COMMAND),
            env=app_env(tmp_path),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the kill takes the submitit jobs too, like Ctrl-C
        )
    try:
        _wait_for_second_batch(Path(storage.removeprefix("sqlite:///")), proc, log)
        time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
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
