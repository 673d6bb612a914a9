"""Metrics reach a real `mlflow server` through an outage: queued while it is down (training does not
wait), sent in order once it is back; saved to a file and sent later when it stays away."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow_testlib import MlflowServer, free_port

from conftest import REPO, run_cli
from gru_mm.tracking.outbox import Outbox

pytestmark = [pytest.mark.slow, pytest.mark.service]


def _metric(step: int) -> Metric:
    return Metric("loss", float(step), int(time.time() * 1000), step)


def _wait(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("outbox-server"))
    server.start()
    yield server
    server.stop()


def test_an_outage_delays_metrics_but_loses_none(server):
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    outbox = Outbox(client, server.uri, retry_s=0.5)
    outbox.put(run_id, [_metric(0)])
    assert outbox.flush(30)
    server.stop()
    start = time.monotonic()
    for step in range(1, 6):
        outbox.put(run_id, [_metric(step)])
    assert time.monotonic() - start < 0.5  # training does not wait on a dead server
    assert _wait(lambda: outbox.down) and not outbox.flush(1)
    server.start()
    assert outbox.flush(60) and not outbox.down
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4, 5]


def test_what_never_arrived_is_saved_and_sent_later(server, tmp_path):
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("spill")).info.run_id
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    outbox = Outbox(MlflowClient(dead), dead, retry_s=0.5)
    for step in range(3):
        outbox.put(run_id, [_metric(step)])
    assert not outbox.flush(2)
    assert outbox.spill(tmp_path / "unsent.jsonl") == 3
    result = subprocess.run([sys.executable, "-m", "gru_mm.tracking.outbox", str(tmp_path / "unsent.jsonl"),
                             "--tracking-uri", server.uri], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "3 batch(es) sent" in result.stdout
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]


def test_training_through_a_dead_server_keeps_its_metrics_and_says_how_to_send_them(server, tmp_path):
    """The server dies during the first epoch: training goes on; at the end the run stops with one
    sentence naming the file of unsent metrics; replayed, the run has every epoch's metrics."""
    env = {"MLFLOW_TRACKING_URI": server.uri}
    proc = subprocess.Popen(
        [str(sys.executable), "-m", "gru_mm.train", "debug=smoke", "trainer.max_epochs=4",
         "trainer.limit_train_batches=15", "logger.mlflow.wait_s=3", "experiment_name=through",
         f"paths.root={tmp_path}", "log_model=false", "test=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, **env},
    )
    client = MlflowClient(server.uri)

    def training_logged() -> bool:
        exp = client.get_experiment_by_name("through")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return bool(runs) and "train/loss_step" in runs[0].data.metrics

    assert _wait(training_logged, 120), "the run never logged a training step"
    server.stop()  # during the first epoch
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"gru-mm-train: MLflow tracking server {server.uri} stopped answering: "), line
    spill = line.split(" are saved in ")[1].split("; send them")[0]
    assert list(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt"))  # the training state is on disk
    server.start()
    replay = run_cli("python", "-m", "gru_mm.tracking.outbox", spill)
    assert replay.returncode == 0, replay.stderr
    (run,) = client.search_runs([client.get_experiment_by_name("through").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 4  # every epoch arrived
