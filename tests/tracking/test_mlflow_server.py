"""A real `mlflow server` on 127.0.0.1: training logs there when MLFLOW_TRACKING_URI says so; a dead one fails fast."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from conftest import BIN, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.service]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 (the server writes to it for the whole module)
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # the first start migrates a new sqlite file (about 30 s)
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


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
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens here
    start = time.monotonic()
    result = run_cli("gru-mm-train", "debug=smoke", f"paths.root={isolated_root}", env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode != 0
    assert f"MLflow tracking server {uri} is not reachable" in result.stderr
    assert time.monotonic() - start < 120
    assert not (isolated_root / "data").exists(), "data was generated before the tracking server was checked"
