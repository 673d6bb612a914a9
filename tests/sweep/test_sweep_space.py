"""Search-space syntax, value formatting, storage strings, objective values, settings: no subprocess."""

import math
import os
import socket
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from sweep_testlib import APP, REPO

from hydra_plugins.gru_mm_optuna_sweeper import _space, _storage, _study
from hydra_plugins.gru_mm_optuna_sweeper._settings import parse_settings


def space(*args, params=None):
    return _space.build_search_space(params, list(args))


def test_hydra_discovers_the_sweeper_and_the_launchers():
    with initialize_config_dir(config_dir=str(APP.parent / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/sweeper=optuna",
                "hydra/sweeper/sampler=cmaes",
                "hydra/launcher=submitit_slurm",
                f"hydra.searchpath=[file://{REPO / 'conf'}]",
            ],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper._target_.endswith("gru_mm_optuna_sweeper.sweeper.OptunaSweeper")
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.CmaEsSampler"
    assert cfg.hydra.launcher.signal_delay_s == 120 and "max_num_timeout" in cfg.hydra.launcher


def test_interval_range_choice_and_tags():
    s = space(
        "a=interval(0, 1)",
        "b=int(interval(1, 10))",
        "c=tag(log, interval(1e-4, 1e-1))",
        "d=tag(log, int(interval(8, 256)))",
        "e=choice(adam, sgd, 'a b')",
        "f=range(1, 10, 3)",
        "g=range(0.0, 1.0, 0.25)",
        "h=shuffle(range(1, 4))",
        "+new=choice(1, 2)",
        "fixed=3",
    )
    d = {k: p.distribution for k, p in s.params.items()}
    assert d["a"] == FloatDistribution(0.0, 1.0)
    assert d["b"] == IntDistribution(1, 10)
    assert d["c"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["d"] == IntDistribution(8, 256, log=True)
    assert d["e"] == CategoricalDistribution(["adam", "sgd", "a b"])
    assert d["f"] == IntDistribution(1, 7, step=3)  # Hydra's range excludes its stop: 1, 4, 7
    assert d["g"] == FloatDistribution(0.0, 0.75, step=0.25)
    assert isinstance(d["h"], CategoricalDistribution) and sorted(d["h"].choices) == [1, 2, 3]
    assert s.params["new"].prefix == "+"
    assert s.fixed == {"fixed": "fixed=3"}
    assert _space.grid_values("f", d["f"]) == [1, 4, 7]
    assert _space.grid_values("g", d["g"]) == [0.0, 0.25, 0.5, 0.75]


def test_config_params_then_command_line_wins():
    s = space("x=5", params={"x": "interval(0, 1)", "y": "choice(1, 2)", "model.gru.hidden_size": 64})
    assert "x" not in s.params and s.fixed["x"] == "x=5"
    assert set(s.params) == {"y"} and s.fixed["model.gru.hidden_size"] == "model.gru.hidden_size=64"


def test_grid_refuses_a_continuous_param():
    with pytest.raises(ValueError, match="'x' is"):
        space("x=interval(0, 1)").grid()


@pytest.mark.parametrize(
    "value", [0, -3, 1.5e-05, True, None, "adam", "a b", "it's", "1", "null", "c:\\d\\", "x/y"]
)
def test_format_value_round_trips_through_hydra(value):
    parsed = OverridesParser.create().parse_override(f"k={_space.format_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_storage_strings(tmp_path: Path):
    assert _storage.resolve_storage_url(None, tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert _storage.resolve_storage_url("journal:j.log", tmp_path) == f"journal:{tmp_path / 'j.log'}"
    assert _storage.resolve_storage_url("postgresql://u:pw@h/db", tmp_path) == "postgresql://u:pw@h/db"
    assert _storage.redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(ValueError, match="hydra.sweeper.storage"):
        _storage.resolve_storage_url("optuna.db", tmp_path)


def test_objective_values():
    assert _study.objective_values(2, 1, None) == [2.0]
    assert _study.objective_values([1, 2], 2, None) == [1.0, 2.0]
    assert _study.objective_values({"val/acc": 0.5, "x": 1}, 1, "val/acc") == [0.5]
    assert math.isnan(_study.objective_values(float("nan"), 1, None)[0])
    with pytest.raises(ValueError, match="2 number"):
        _study.objective_values(1.0, 2, None)
    with pytest.raises(ValueError, match="val/loss"):
        _study.objective_values({"val/acc": 0.5}, 1, "val/loss")


def _settings(task=None, **options):
    base = {"direction": "minimize", "n_trials": 4, "n_jobs": 2, "sampler": {"_target_": "x.Y"}}
    task = {"logger": {"experiment_name": "exp"}} if task is None else task
    return parse_settings({**base, **options}, OmegaConf.create({"hydra": {"job": {"name": "app"}}, **task}))


def test_settings_defaults_and_errors():
    s = _settings()
    assert (s.study_name, s.mlflow_experiment, s.directions) == ("app", "exp", ["minimize"])
    spine = {"experiment_name": "gru-mm", "logger": {"mlflow": {"experiment_name": "${experiment_name}"}}}
    assert _settings(task=spine).mlflow_experiment == "gru-mm"
    assert _settings(task={}).mlflow_experiment == "sweeps"
    with pytest.raises(ValueError, match="hydra.sweeper.direction"):
        _settings(direction="down")
    with pytest.raises(ValueError, match="hydra.sweeper.n_jobs"):
        _settings(n_jobs=0)
    with pytest.raises(ValueError, match="hydra.sweeper.study_name"):
        _settings(study_name="a b")


def test_interrupted_trials_are_failed_and_retried(tmp_path: Path):
    storage = _storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    done = study.ask()
    done.suggest_float("x", 0, 1)
    study.tell(done, 1.0)
    dead = study.ask()
    x = dead.suggest_float("x", 0, 1)
    dead.set_user_attr(_study.OWNER, "other-host:1")  # no heartbeat for ages
    alive = study.ask()
    alive.set_user_attr(_study.OWNER, "other-host:2")
    alive.set_user_attr(_study.HEARTBEAT, time.time())
    here = study.ask()
    here.set_user_attr(_study.OWNER, f"{socket.gethostname()}:{os.getppid()}")  # a live process on this host
    assert _study.recover_interrupted(study, storage, grid=False, stale_after_s=60) == [dead.number]
    assert _study.n_finished(study) == 1
    retry = study.ask()
    assert retry.suggest_float("x", 0, 1) == x and retry.user_attrs[_study.RETRY_OF] == dead.number
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == TrialState.FAIL
    assert states[alive.number] == states[here.number] == TrialState.RUNNING


def test_a_parameter_set_is_retried_at_most_max_retries_times(tmp_path: Path):
    storage = _storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    first = study.ask()
    x = first.suggest_float("x", 0, 1)
    attempts = [first.number]
    study_id = storage.get_study_id_from_name("s")
    for _ in range(5):  # each attempt's sweeper dies with it (a trial that crashes its process every time)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, attempts[-1])
        storage.set_trial_user_attr(trial_id, _study.OWNER, "other-host:1")  # a dead sweeper elsewhere
        assert _study.recover_interrupted(study, storage, grid=False, stale_after_s=60, max_retries=2) == [
            attempts[-1]
        ]
        queued = [t for t in study.trials if t.state == TrialState.WAITING]
        if not queued:
            break
        retry = study.ask()
        assert retry.suggest_float("x", 0, 1) == x and retry.user_attrs[_study.RETRY_OF] == attempts[-1]
        attempts.append(retry.number)
    assert len(attempts) == 3, "the first try and 2 retries, then no more"
    last = study.trials[attempts[-1]]
    assert last.state == TrialState.FAIL and last.user_attrs[_study.RETRIED] is False
    assert "failed 3 times" in last.user_attrs[_study.ERROR]
    assert _study.n_finished(study) == 1, "the given-up trial counts as finished; the retried ones do not"


def test_a_connection_error_is_retried_and_other_errors_are_not(tmp_path: Path):
    storage = _storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    for error in (
        ValueError("data.batch_size must be >= 1"),
        ConnectionError("server 127.0.0.1 is not reachable"),
    ):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        assert _study.record(study, storage, trial.number, error=error) == TrialState.FAIL
    bad_config, outage, queued = study.trials
    assert queued.state == TrialState.WAITING
    assert bad_config.user_attrs[_study.ERROR] == "ValueError: data.batch_size must be >= 1"
    assert _study.RETRIED not in bad_config.user_attrs and _study.counts_as_finished(bad_config)
    assert outage.user_attrs[_study.RETRIED] is True and not _study.counts_as_finished(outage)
    retry = study.ask()
    assert retry.user_attrs[_study.RETRY_OF] == outage.number
    assert retry.suggest_float("x", 0, 1) == outage.params["x"]


def test_heartbeat_stamps_running_trials(tmp_path: Path):
    storage = _storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("s"), trial.number
    )
    with _study.Heartbeat(storage, [trial_id], interval_s=0.05):
        started = time.time()
        time.sleep(0.2)
    assert study.trials[0].user_attrs[_study.HEARTBEAT] > started  # stamped again after the first beat
