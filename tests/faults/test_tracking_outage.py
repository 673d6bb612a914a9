"""A real `mlflow server` that stops while `gru-mm-train` runs: metrics queued during the outage survive a
SIGKILL of the run (they are on disk, in the run folder's journal) and reach the same run when it is resumed;
a run that fails during an outage shows its own error, having waited for the server once."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from faults_testlib import run, start, wait_for
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
from mlflow_testlib import MlflowServer  # noqa: E402

from gru_mm.tracking.outbox import unsent  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.service]

STEPS = 16  # training batches per epoch: epoch e logs train/loss_step at steps 16e..16e+15, its end at 16e+15
RUN = [
    "debug=smoke",
    "data.batch_size=8",
    f"trainer.limit_train_batches={STEPS}",
    "trainer.limit_val_batches=2",
    "model.gru.hidden_size=16",
    "trainer.max_epochs=3",
    "test=false",
    "log_model=false",
    "~callbacks.system_metrics",
    "experiment_name=outage",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_metrics_of_an_outage_survive_a_kill_and_reach_the_run_on_resume(server, tmp_path):
    root = tmp_path / "project"
    env = {"MLFLOW_TRACKING_URI": server.uri}
    client = MlflowClient(server.uri)
    proc = start("gru-mm-train", *RUN, f"paths.root={root}", env=env, log=tmp_path / "first.log")
    journals = lambda: list(root.glob("logs/train/runs/*/mlflow_outbox.jsonl"))  # noqa: E731

    def steps_on_server() -> list[int]:
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return _steps(client, runs[0].info.run_id, "train/loss_step") if runs else []

    def queued_steps() -> set[int]:
        return {
            m[3]
            for path in journals()
            for b in unsent(path)
            for m in b["metrics"]
            if m[0] == "train/loss_step"
        }

    try:
        # 1. Epoch 0 is logging to the server: freeze the run, stop the server (during epoch 0), let it go on.
        wait_for(lambda: steps_on_server(), 600, "a training step reached the server", proc)
        os.kill(proc.pid, signal.SIGSTOP)
        assert max(steps_on_server()) < STEPS - 1, (
            "the run got past epoch 0 before the server could be stopped"
        )
        server.stop()
        os.kill(proc.pid, signal.SIGCONT)
        # 2. Epoch 1 is under way, the server still down: kill the run.
        wait_for(lambda: any(s > STEPS for s in queued_steps()), 900, "epoch 1 to log a step", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (journal,) = journals()
    left = {(m[0], m[3]) for b in unsent(journal) for m in b["metrics"]}
    assert ("val/acc", STEPS - 1) in left  # epoch 0's validation was only on disk when the run was killed
    assert list(root.glob("logs/train/runs/*/checkpoints/last.ckpt"))

    kept = journal.read_text()  # for the failure message: what the killed run left to send
    server.start()
    resumed = run("gru-mm-train", *RUN, f"paths.root={root}", "ckpt_path=last", env=env, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    run_id = mlflow_run.info.run_id
    epoch_ends = [STEPS * (e + 1) - 1 for e in range(3)]
    for key in ("val/acc", "val/loss", "train/loss_epoch"):
        assert _steps(client, run_id, key) == epoch_ends, key  # every epoch's, once
    steps = _steps(client, run_id, "train/loss_step")
    assert steps == list(range(3 * STEPS)), (  # none lost, none twice
        f"train/loss_step steps {steps}\njournal the killed run left:\n{kept[-4000:]}\n"
        f"its log:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    )
    assert journal.stat().st_size == 0  # everything arrived


def test_a_run_failing_during_an_outage_shows_its_own_error(server, tmp_path):
    """The server stops while the run waits at batch 1 (fault_injection.PauseAt); a NaN gradient at step 5
    then stops the run: its error is the last line, not the server's, and the server was waited for once."""
    gate = tmp_path / "gate"
    gate.mkdir()
    quick = [
        "debug=smoke",
        "data.batch_size=8",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "model.gru.hidden_size=16",
        "trainer.max_epochs=3",
        "test=false",
        "log_model=false",
        "~callbacks.system_metrics",
        "experiment_name=failing",
        "logger.mlflow.wait_s=3",
        "+callbacks.pause._target_=fault_injection.PauseAt",
        f"+callbacks.pause.folder={gate}",
        "+callbacks.pause.epoch=0",
        "+callbacks.pause.batch=1",
        "+callbacks.nan._target_=fault_injection.NanGradientAt",
        "+callbacks.nan.steps=[5]",
    ]
    proc = start(
        "gru-mm-train",
        *quick,
        f"paths.root={tmp_path}",
        env={"MLFLOW_TRACKING_URI": server.uri},
        log=tmp_path / "run.log",
    )
    try:
        wait_for(lambda: (gate / "reached").exists(), 600, "the run to reach batch 1", proc)
        server.stop()
        (gate / "go").touch()
        proc.wait(900)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.start()
    output = (tmp_path / "run.log").read_text()
    assert proc.returncode == 1, output[-3000:]
    line = output.strip().splitlines()[-1]
    assert line.startswith("gru-mm-train: the gradient norm is nan at epoch 1, step 5: "), line
    assert output.count("waiting up to 3 s for MLflow tracking server") == 1
    assert "did not take everything: " in output and "mlflow_outbox.jsonl" in output
