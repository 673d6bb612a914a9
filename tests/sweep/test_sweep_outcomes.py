"""Failing and NaN trials, samplers, several objectives and journal storage, through the real CLI."""

import importlib.util
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from sweep_testlib import load_study, run_app, sqlite_storage

NO_MLFLOW = "hydra.sweeper.mlflow=false"


@pytest.mark.slow
def test_failing_and_nan_trials_are_recorded_and_the_sweep_goes_on(tmp_path: Path):
    run_app(
        tmp_path,
        NO_MLFLOW,
        "hydra.sweeper.n_trials=4",
        "x=interval(-2, 2)",
        "fail_trials=[0]",
        "nan_trials=[2]",
    )
    trials = load_study(sqlite_storage(tmp_path)).trials
    states = {t.number: t.state for t in trials}
    assert states == {0: TrialState.FAIL, 1: TrialState.COMPLETE, 2: TrialState.FAIL, 3: TrialState.COMPLETE}
    assert "fails on purpose" in trials[0].user_attrs["error"]
    assert trials[2].user_attrs["error"] == "the objective is NaN"
    summary = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert summary["best_trial"] in (1, 3)


SAMPLERS = ["tpe", "random", "grid", "cmaes"]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers(tmp_path: Path, sampler: str):
    if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        pytest.skip("the cmaes package is not installed (Optuna's CmaEsSampler needs it)")
    # The grid sampler needs discrete parameters: 2 x 2 points, so 4 trials cover it and the sweep stops.
    space = (
        ("x=range(0, 2)", "y=choice(-2, 0)")
        if sampler == "grid"
        else ("x=interval(-2, 2)", "y=interval(-3, 0)")
    )
    run_app(tmp_path, NO_MLFLOW, f"hydra/sweeper/sampler={sampler}", "hydra.sweeper.n_trials=5", *space)
    trials = load_study(sqlite_storage(tmp_path)).trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    if sampler == "grid":
        assert sorted((t.params["x"], t.params["y"]) for t in trials) == [(0, -2), (0, 0), (1, -2), (1, 0)]
    else:
        assert len(trials) == 5 and all(-2 <= t.params["x"] <= 2 for t in trials)


@pytest.mark.slow
def test_multi_objective_on_journal_storage(tmp_path: Path):
    run_app(
        tmp_path,
        NO_MLFLOW,
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.storage=journal:optuna.log",
        "hydra.sweeper.n_trials=4",
        "two_objectives=true",
        "x=interval(-2, 2)",
    )
    study = load_study(f"journal:{tmp_path / 'sweep' / 'optuna.log'}")
    assert len(study.directions) == 2
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert all(len(t.values) == 2 for t in study.trials)
    summary = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert summary["best_trials"]
