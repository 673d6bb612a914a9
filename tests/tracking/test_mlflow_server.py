"""A real `mlflow server` on 127.0.0.1: training logs there when MLFLOW_TRACKING_URI says so; a dead one fails fast."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient
from mlflow_testlib import MlflowServer, free_port

from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.service]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("server"))
    yield server.start()
    server.stop()


def test_training_logs_to_the_server(mlflow_server, isolated_root):
    result = run_cli("gru-mm-train", "debug=smoke", f"paths.root={isolated_root}", "experiment_name=remote",
                     env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (isolated_root / "mlflow.db").exists(), "logged to the local store instead of the server"
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("remote")
    (run,) = client.search_runs([exp.experiment_id])
    assert "test/acc" in run.data.metrics
    assert run.data.params["model/gru/hidden_size"] == "64"
    paths = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert len(paths) == 1 and paths[0].endswith(".ckpt")
    page = f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    assert f"MLflow: {page}" in result.stdout + result.stderr  # the run's page on the server


def test_dead_server_fails_fast_with_one_sentence(isolated_root):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    start = time.monotonic()
    result = run_cli("gru-mm-train", "debug=smoke", f"paths.root={isolated_root}", env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode != 0
    assert f"MLflow tracking server {uri} is not reachable" in result.stderr
    assert time.monotonic() - start < 120
    assert not (isolated_root / "data").exists(), "data was generated before the tracking server was checked"
