"""Where a run lands in MLflow (the experiment: the data's name) and what it is called (distinct run
names)."""

from __future__ import annotations

import random
import re
from datetime import datetime

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli
from gru_mm.eval import eval_run_name, eval_tags
from gru_mm.tracking.run import default_run_name
from models.model_testlib import compose_train


def test_a_run_on_your_own_data_is_logged_to_an_experiment_named_after_it():
    assert compose_train().logger.mlflow.experiment_name == "avdigits"  # the built-in set
    own = compose_train("data=manifest", "data.path=/recordings/ward_7.csv")
    assert own.experiment_name == own.logger.mlflow.experiment_name == "ward_7"  # the manifest file's stem
    assert compose_train("data=features", "data.path=sets/mosi.pkl").logger.mlflow.experiment_name == "mosi"
    named = compose_train("data=manifest", "data.path=ward_7.csv", "experiment_name=icu")
    assert named.logger.mlflow.experiment_name == "icu"  # a name given wins


def test_run_names_are_readable_and_differ_even_from_the_same_seed_in_the_same_second():
    now = datetime(2026, 11, 27, 16, 58, 3)
    overrides = ["debug=smoke", "paths.root=/tmp/x", "experiment_name=e", "model.gru.hidden_size=8"]
    names = []
    for _ in range(2):
        random.seed(42)  # training seeds Python's random before the logger names the run
        names.append(default_run_name("avdigits", overrides, now))
    assert names[0] != names[1]
    for name in names:  # where files go, and the experiment (already the prefix), are left out
        assert re.fullmatch(
            r"avdigits debug=smoke model\.gru\.hidden_size=8 11-27 16:58:03 [0-9a-f]{4}", name
        ), name


def test_eval_runs_are_named_like_training_runs_without_the_checkpoint_path_or_passwords():
    overrides = ["ckpt_path=/runs/a/checkpoints/epoch=3.ckpt", "data.path=b.csv", "paths.root=/tmp/x"]
    overrides.append("logger.mlflow.tracking_uri=http://ann:pw@host:5000")
    names = []
    for _ in range(2):
        random.seed(42)  # as training seeds it: MLflow's own names would repeat
        names.append(eval_run_name("avdigits", overrides))
    assert names[0] != names[1]
    for name in names:
        assert re.fullmatch(
            r"avdigits eval data\.path=b\.csv logger\.mlflow\.tracking_uri=http://ann:\*\*\*@host:5000 "
            r"\d\d-\d\d \d\d:\d\d:\d\d [0-9a-f]{4}",
            name,
        ), name


def test_eval_tags_mask_passwords_of_the_command_line(monkeypatch):
    """gru-mm-eval hands its tags to the logger that creates the run: a password in the command (a
    tracking URL, a data path on a server) must not reach MLflow, as with gru-mm-train."""
    argv = ["gru-mm-eval", "ckpt_path=run.ckpt", "logger.mlflow.tracking_uri=http://ann:s3cret@host:5000"]
    monkeypatch.setattr("sys.argv", argv)
    tags = eval_tags("run.ckpt", "https://bob:pw2@data.example.org/set.csv", "abc123")
    assert not [v for v in tags.values() if "s3cret" in v or "pw2" in v], tags
    assert tags["gru_mm.command"].endswith("logger.mlflow.tracking_uri=http://ann:***@host:5000")
    assert tags["gru_mm.eval_data"] == "https://bob:***@data.example.org/set.csv"
    assert tags["gru_mm.job"] == "eval" and tags["gru_mm.source_run_id"] == "abc123"


@pytest.mark.slow
def test_two_runs_get_distinct_names_shown_in_the_log_and_in_mlflow(isolated_root):
    names = []
    for _ in range(2):
        result = run_cli(
            "gru-mm-train",
            "debug=smoke",
            "test=false",
            "log_model=false",
            "trainer.limit_val_batches=1",
            f"paths.root={isolated_root}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        shown = re.search(r"MLflow: run '([^']+)' in experiment 'avdigits'", result.stdout + result.stderr)
        assert shown, (result.stdout + result.stderr)[-3000:]
        names.append(shown.group(1))
    assert names[0] != names[1]
    assert all(
        n.startswith("avdigits debug=smoke test=false log_model=false trainer.limit_val_batches=1 ")
        for n in names
    ), names
    client = MlflowClient(f"sqlite:///{isolated_root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("avdigits").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(names)
