"""kill -9 at an epoch boundary, then `ckpt_path=last`: the same metrics as a run that was never killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from faults_testlib import FAST, metric_history, run, start, train_runs

# Dropout, modality dropout and random crops all draw random numbers: a resume that lost their states differs.
ARGS = [
    *FAST,
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "model.modality_dropout=0.3",
    "data.train_crop_steps=12",
    "trainer.log_every_n_steps=1",
]
EPOCH_METRICS = ("val/loss", "val/acc", "train/loss_epoch")

pytestmark = pytest.mark.slow


def kill_after_epoch(root: Path, epoch: int, *args: str, timeout: float = 600) -> Path:
    """Start a run, SIGKILL it as soon as its last.ckpt holds `epoch` (1-based, as the logs count), and
    return that checkpoint. The process is stopped (SIGSTOP) the moment a new last.ckpt appears, so it cannot
    run on into the next epoch while the checkpoint is read."""
    proc = start("gru-mm-train", *args, f"paths.root={root}", log=root / f"killed_after_{epoch}.log")
    seen, deadline = None, time.time() + timeout
    try:
        while time.time() < deadline:
            assert proc.poll() is None, (root / f"killed_after_{epoch}.log").read_text()[-3000:]
            lasts = list(root.glob("logs/train/runs/*/checkpoints/last.ckpt"))
            inode = lasts[0].stat().st_ino if lasts else None  # atomic writes: each one is a new inode
            if inode is not None and inode != seen:
                proc.send_signal(signal.SIGSTOP)
                seen = inode
                if torch.load(lasts[0], weights_only=True)["epoch"] == epoch - 1:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return lasts[0]
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.002)
        raise AssertionError(f"no last.ckpt of epoch {epoch} within {timeout} s")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def epoch_metrics(root: Path) -> dict[str, list[tuple[int, float]]]:
    (r,) = train_runs(root)
    return {key: metric_history(root, r.info.run_id, key) for key in EPOCH_METRICS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[tuple[int, float]]]:
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run("gru-mm-train", *ARGS, f"paths.root={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = epoch_metrics(root)
    assert all(len(history) == 4 for history in metrics.values()), metrics
    return metrics


@pytest.mark.parametrize("epoch", [1, 3])
def test_kill_at_an_epoch_boundary_then_resume_gives_the_uninterrupted_metrics(
    epoch, uninterrupted, tmp_path
):
    last = kill_after_epoch(tmp_path, epoch, *ARGS)
    (killed,) = train_runs(tmp_path)
    assert killed.info.status == "RUNNING"  # killed: nothing closed the run
    result = run("gru-mm-train", *ARGS, "ckpt_path=last", f"paths.root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ckpt_path=last: resuming {last}" in result.stdout + result.stderr  # says which run it picked
    (resumed,) = train_runs(tmp_path)  # one MLflow run, continued
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    resumed_metrics = epoch_metrics(tmp_path)
    for key in ("val/loss", "val/acc"):  # identical floats, epoch by epoch, no step twice
        assert resumed_metrics[key] == uninterrupted[key], key
    # Lightning logs an epoch's train/loss_epoch just after writing its checkpoint: a kill in between (this
    # test kills right there) loses that one value; every later epoch's is identical
    train = uninterrupted["train/loss_epoch"]
    assert set(train[epoch:]) <= set(resumed_metrics["train/loss_epoch"]) <= set(train)
