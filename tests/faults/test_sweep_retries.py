"""Trials that kill their sweep: what finished is already in the study, and a parameter set that kills it on
every retry is tried 1 + max_retries times in all, however often the sweep is run again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweep.sweep_testlib import app_command, app_env, load_study, run_app, sqlite_storage


def run_killed(tmp_path: Path, *overrides: str) -> None:
    """One sweep that a trial kills (SIGKILL of the sweeper's own process, as an OOM kill would)."""
    proc = subprocess.run(
        app_command(tmp_path / "sweep", *overrides),
        env=app_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, f"the sweep should be killed ({proc.returncode}):\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_a_finished_trial_is_told_before_its_batch_ends(tmp_path: Path):
    run_killed(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.mlflow=false",
        "x=interval(-2, 2)",
        "crash_trials=[1]",
    )
    states = {t.number: t.state for t in load_study(sqlite_storage(tmp_path)).trials}
    # Trial 0 told itself; trial 1 died with the sweeper before anything could be told.
    assert states == {0: TrialState.COMPLETE, 1: TrialState.RUNNING}


@pytest.mark.slow
def test_a_trial_that_always_kills_its_sweep_is_not_retried_forever(tmp_path: Path):
    sweep = (
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.mlflow=false",
        "hydra.sweeper.max_retries=1",
        "x=choice(0.0, 5.0)",
        "crash_x=5.0",
    )
    run_killed(tmp_path, *sweep)  # the first try of x=5
    run_killed(tmp_path, *sweep)  # its retry
    run_app(tmp_path, *sweep)  # out of retries: x=5 is a finished FAIL and the sweep ends, exit 0
    run_app(tmp_path, *sweep)  # and a re-run does not try it again

    trials = load_study(sqlite_storage(tmp_path)).trials
    crashing = [t for t in trials if t.params["x"] == 5.0]
    assert len(crashing) == 2, "the first try and max_retries=1 retry"
    assert all(t.state == TrialState.FAIL for t in crashing)
    assert (
        crashing[-1].user_attrs["retried"] is False and "failed 2 times" in crashing[-1].user_attrs["error"]
    )
    assert [t.state for t in trials if t.params["x"] == 0.0] == [TrialState.COMPLETE]
