"""kill -9 at random moments, over and over, each followed by `ckpt_path=last`: every resume starts, no
checkpoint on disk is ever unreadable, and the run finishes with each epoch's metrics as if never killed."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from faults_testlib import FAST, metric_history, start, train_runs

from gru_mm.checkpoints import load

# Each kill costs a CLI start and a few epochs. With seed 13 the first 6 kills are 3 that hunt a checkpoint
# write and 3 at a random delay after one; GRU_MM_TEST_KILLS=20 runs the longer series.
KILLS = int(os.environ.get("GRU_MM_TEST_KILLS", "6"))
# A kill lands at most ~0.4 s after a checkpoint, a few of this tiny run's epochs on a quiet machine: with
# room for 4 epochs per attempt, the run outlasts the kills.
EPOCHS = 4 * KILLS + 5
ARGS = [*FAST, f"trainer.max_epochs={EPOCHS}", "trainer.deterministic=true", "model.modality_dropout=0.3"]


def _check_folder(root: Path) -> None:
    """Every checkpoint on disk reads back whole, and last.ckpt's best checkpoint exists."""
    for path in root.glob("logs/train/runs/*/checkpoints/*.ckpt"):
        ckpt = load(path)  # a CheckpointError (truncated, half-written) fails the test
        if path.name == "last.ckpt":
            state = next(
                v
                for k, v in ckpt["callbacks"].items()
                if k.startswith("RunCheckpoint") or k.startswith("ModelCheckpoint")
            )
            assert Path(state["best_model_path"]).is_file(), f"{path} names a missing best checkpoint"


def _kill_once(root: Path, rng: random.Random, n: int, resume: bool) -> None:
    """Start (resuming after the first), wait for training to write a checkpoint, then kill: at once when a
    write is in progress (a temporary file appears), or after a random delay, whichever comes first."""
    log = root / f"attempt{n}.log"
    proc = start(
        "gru-mm-train", *ARGS, *(["ckpt_path=last"] if resume else []), f"paths.root={root}", log=log
    )
    folder = root / "logs/train/runs"
    seen = {p: p.stat().st_ino for p in folder.glob("*/checkpoints/last.ckpt")} if folder.exists() else {}
    deadline, kill_at = time.time() + 600, None
    hunt_writes = rng.random() < 0.5
    while proc.poll() is None and time.time() < deadline:
        lasts = (
            {p: p.stat().st_ino for p in folder.glob("*/checkpoints/last.ckpt")} if folder.exists() else {}
        )
        if kill_at is None and lasts != seen:  # this process has started training and written a checkpoint
            kill_at = time.time() + rng.uniform(0.0, 0.4)
        writing = hunt_writes and kill_at is not None and any(folder.glob("*/checkpoints/.*.tmp"))
        if writing or (kill_at is not None and time.time() >= kill_at):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.001)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    raise AssertionError(f"attempt {n}: exit {proc.returncode} before a kill: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_random_kills_each_resumed_leave_readable_checkpoints_and_a_finished_run(tmp_path):
    rng = random.Random(13)
    for n in range(KILLS):
        _kill_once(tmp_path, rng, n, resume=n > 0)
        _check_folder(tmp_path)
    final = start(
        "gru-mm-train", *ARGS, "ckpt_path=last", f"paths.root={tmp_path}", log=tmp_path / "final.log"
    )
    assert final.wait(timeout=900) == 0, (tmp_path / "final.log").read_text()[-3000:]
    _check_folder(tmp_path)
    (only,) = train_runs(tmp_path)  # every resume continued the one MLflow run
    assert only.info.status == "FINISHED"
    by_step = defaultdict(set)
    for step, value in metric_history(tmp_path, only.info.run_id, "val/loss"):
        by_step[step].add(value)
    assert len(by_step) == EPOCHS  # every epoch validated
    # an epoch validated, killed before its checkpoint, and validated again after the resume logs twice:
    # the same value both times, since the resume replays it exactly
    assert all(len(values) == 1 for values in by_step.values()), dict(by_step)
