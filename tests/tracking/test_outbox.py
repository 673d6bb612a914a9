"""Metrics reach a real `mlflow server` through an outage: queued while it is down (training does not
wait), sent in order once it is back; kept on disk (a journal) so that a SIGKILL loses none, and sent
later; a refusal for good (HTTP 4xx) fails fast instead of being retried as an outage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow_testlib import MlflowServer, free_port

from conftest import REPO, run_cli
from faults.faults_testlib import start
from gru_mm.tracking.outbox import Outbox, unsent
from gru_mm.tracking.store import TrackingRejected

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


def test_an_outage_delays_metrics_but_loses_none(server, tmp_path):
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    journal = tmp_path / "mlflow_outbox.jsonl"
    outbox = Outbox(client, server.uri, retry_s=0.5, journal=journal)
    outbox.put(run_id, [_metric(0)])
    assert outbox.flush(30)
    server.stop()
    start = time.monotonic()
    for step in range(1, 6):
        outbox.put(run_id, [_metric(step)])
    assert time.monotonic() - start < 0.5  # training does not wait on a dead server
    assert _wait(lambda: outbox.down) and not outbox.flush(1)
    assert [b["metrics"][0][3] for b in unsent(journal)] == [1, 2, 3, 4, 5]  # on disk while it is down
    server.start()
    assert outbox.flush(60) and not outbox.down
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4, 5]
    assert journal.stat().st_size == 0  # emptied once everything arrived


# A process that queues batches for a server that is down, says so, and waits to be killed.
_QUEUE_AND_WAIT = """
import sys, time
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from gru_mm.tracking.outbox import Outbox
uri, run_id, journal = sys.argv[1:4]
outbox = Outbox(MlflowClient(uri), uri, retry_s=0.2, journal=__import__("pathlib").Path(journal))
for step in range(3):
    outbox.put(run_id, [Metric("loss", float(step), 1000 + step, step)])
print("queued", flush=True)
time.sleep(600)
"""


def test_what_a_killed_process_queued_is_on_disk_and_sent_later(server, tmp_path):
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("killed")).info.run_id
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    journal = tmp_path / "mlflow_outbox.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _QUEUE_AND_WAIT, dead, run_id, str(journal)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout.readline().strip() == "queued"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(unsent(journal)) == 3
    send = ["-m", "gru_mm.tracking.outbox", str(journal), "--tracking-uri", server.uri]
    result = run_cli("python", *send)
    assert result.returncode == 0, result.stderr
    assert "3 batch(es) sent" in result.stdout
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]
    again = run_cli("python", *send)
    assert "0 batch(es) sent" in again.stdout  # marked as sent in the file: not sent twice
    assert unsent(journal) == []


def test_a_resumed_outbox_sends_what_was_left_without_the_steps_redone(server, tmp_path):
    """What `ckpt_path=...` does through BufferedMLFlowLogger.resume_outbox: a new process opens the same
    journal; points past the checkpoint's step are dropped, since the resumed run logs them again."""
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("resumed")).info.run_id
    journal = tmp_path / "mlflow_outbox.jsonl"
    lines = [
        {
            "seq": i,
            "tracking_uri": server.uri,
            "run_id": run_id,
            "metrics": [["loss", float(i), 1000 + i, i]],
            "params": [],
            "tags": [],
        }
        for i in range(5)
    ]
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"sent": 0}\n{"seq": 5, "run_')
    outbox = Outbox(client, server.uri, retry_s=0.2, journal=journal, redo_from_step=3)
    assert outbox.recovered == 2  # 1 and 2: 0 was sent, 3 and 4 are redone, the cut line was never queued
    assert outbox.flush(30)
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]


def test_a_refusal_for_good_fails_fast_and_is_not_retried(server, tmp_path):
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("refused")).info.run_id
    outbox = Outbox(client, server.uri, retry_s=0.2, journal=tmp_path / "mlflow_outbox.jsonl")
    outbox.put(run_id, [_metric(0)])
    assert outbox.flush(30)
    client.delete_run(run_id)  # the server now answers 400 to anything logged to it
    outbox.put(run_id, [_metric(1)])
    start = time.monotonic()
    assert not outbox.flush(30) and time.monotonic() - start < 10
    assert outbox.error is not None and not outbox.down  # not taken for an outage
    with pytest.raises(TrackingRejected, match=rf"refused the metrics of run {run_id} with HTTP 400 "):
        outbox.put(run_id, [_metric(2)])
    assert [b["metrics"][0][3] for b in unsent(tmp_path / "mlflow_outbox.jsonl")] == [1]  # kept


def _train(*args: str, server_uri: str, root: Path, log: Path):
    """A real training run in the background (faults_testlib.start: forked from the test zygote, the
    faults folder importable), its output in `log`."""
    run_args = [
        "debug=smoke",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=5",
        "logger.mlflow.wait_s=3",
        f"paths.root={root}",
        "log_model=false",
        "test=false",
        *args,
    ]
    return start("gru-mm-train", *run_args, env={"MLFLOW_TRACKING_URI": server_uri}, log=log)


def pause_at(folder: Path, epoch: int, batch: int) -> list[str]:
    """fault_injection.PauseAt: the run waits there until the test creates `folder/go`."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        "+callbacks.pause._target_=fault_injection.PauseAt",
        f"+callbacks.pause.folder={folder}",
        f"+callbacks.pause.epoch={epoch}",
        f"+callbacks.pause.batch={batch}",
    ]


def test_training_through_a_dead_server_keeps_its_metrics_and_says_how_to_send_them(server, tmp_path):
    """The server dies during the first epoch, while the run waits (by construction it cannot finish
    first): training goes on; at the end the run waits for the server once and stops with one sentence
    naming the journal; sent, the run has every epoch's metrics."""
    gate = tmp_path / "gate"
    log = tmp_path / "train.log"
    proc = _train(
        "experiment_name=through",
        *pause_at(gate, epoch=0, batch=1),
        server_uri=server.uri,
        root=tmp_path,
        log=log,
    )
    assert _wait(lambda: (gate / "reached").exists() or proc.poll() is not None, 300), "the run never started"
    assert proc.poll() is None, log.read_text()[-3000:]
    server.stop()  # during the first epoch: the run is waiting for `go`
    (gate / "go").touch()
    assert proc.wait(timeout=600) == 1, log.read_text()[-3000:]
    output = log.read_text()
    line = output.strip().splitlines()[-1]
    assert line.startswith(f"gru-mm-train: MLflow tracking server {server.uri} stopped answering: "), line
    journal = line.split(" are kept in ")[1].split("; they are sent")[0]
    assert (
        journal.endswith("mlflow_outbox.jsonl")
        and Path(journal).parent.parent == tmp_path / "logs/train/runs"
    )
    assert output.count("waiting up to 3 s for MLflow tracking server") == 1  # waited once, not twice
    assert list(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt"))  # the training state is on disk
    server.start()
    replay = run_cli("python", "-m", "gru_mm.tracking.outbox", journal)
    assert replay.returncode == 0, replay.stderr
    client = MlflowClient(server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("through").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 4  # every epoch arrived
