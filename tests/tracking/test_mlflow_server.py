"""A real `mlflow server` on 127.0.0.1: training logs there when MLFLOW_TRACKING_URI says so; a dead one
fails fast."""

from __future__ import annotations

import socket
import time

import pytest
from mlflow.tracking import MlflowClient
from mlflow_testlib import MlflowServer, free_port

from conftest import run_cli
from gru_mm.tracking.run import check_tracking

pytestmark = [pytest.mark.slow, pytest.mark.service]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("server"))
    yield server.start()
    server.stop()


def test_training_logs_to_the_server(mlflow_server, isolated_root):
    result = run_cli(
        "gru-mm-train",
        "debug=smoke",
        f"paths.root={isolated_root}",
        "experiment_name=remote",
        env={"MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (isolated_root / "mlflow.db").exists(), "logged to the local store instead of the server"
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("remote")
    (run,) = client.search_runs([exp.experiment_id])
    assert "test/acc" in run.data.metrics
    assert run.data.params["model/gru/hidden_size"] == "64"
    paths = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert len(paths) == 1 and paths[0].endswith(".ckpt")
    (model,) = client.search_logged_models([exp.experiment_id])  # the pyfunc model, uploaded to the server
    assert (model.name, model.source_run_id, str(model.status)) == ("model", run.info.run_id, "READY")
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(model.model_id)}
    page = f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    assert f"MLflow: {page}" in result.stdout + result.stderr  # the run's page on the server


@pytest.fixture
def silent_server():
    """A socket that accepts connections (the kernel completes them) and never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(params=["refused", "silent"])
def dead_server(request):
    if request.param == "refused":
        return f"http://127.0.0.1:{free_port()}", "Connection refused"  # nothing listens here
    return request.getfixturevalue("silent_server"), "timed out"


def test_the_reachability_check_is_bounded_in_seconds(dead_server):
    uri, reason = dead_server
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"MLflow tracking server {uri} is not reachable .*{reason}"):
        check_tracking({"mlflow": {"tracking_uri": uri}})
    assert time.monotonic() - start < 8  # its timeout is 5 s; MLflow's own retries would take minutes


def test_dead_server_fails_fast_with_one_sentence(dead_server, isolated_root):
    uri, reason = dead_server
    start = time.monotonic()
    result = run_cli(
        "gru-mm-train", "debug=smoke", f"paths.root={isolated_root}", env={"MLFLOW_TRACKING_URI": uri}
    )
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line.startswith(f"gru-mm-train: MLflow tracking server {uri} is not reachable (") and reason in line
    ), line
    # start-up (imports: a minute on a busy 2-core machine) included; MLflow's own retries would take
    # minutes more
    assert time.monotonic() - start < 180
    assert not (isolated_root / "data").exists(), "data was generated before the tracking server was checked"
