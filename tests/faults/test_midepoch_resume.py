"""kill -9 just after a mid-epoch checkpoint (`every_n_train_steps`), then `ckpt_path=last`: the resumed run
trains on each remaining sample of that epoch exactly once, in the uninterrupted run's order, and ends with
its weights."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from batch_ids_probe import PATH_ENV
from faults_testlib import FAST, run, start

BATCHES_PER_EPOCH = 6  # 48 training samples in batches of 8, every batch used (no limit_train_batches)
KILL_AT_STEP = 8  # a checkpoint every 4 steps: step 8 is 2 batches into the second epoch
ARGS = [
    *(a for a in FAST if not a.startswith(("data.source.n_train", "trainer.limit_train_batches"))),
    "data.source.n_train=48",
    "trainer.limit_train_batches=1.0",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "model.modality_dropout=0.3",  # draws from torch's generator every step: a resume must restore it
    "callbacks.model_checkpoint.every_n_train_steps=4",
    "+callbacks.batch_ids._target_=batch_ids_probe.RecordBatchIds",
    "trusted_targets=[batch_ids_probe]",  # the resumed run's config (the checkpoint's) names the probe
]
# Random crops are fixed by the data order (seed, epoch, batch number), not by the process that reads the
# batch: loader workers, whose generators a checkpoint does not hold, crop as the uninterrupted run did.
VARIANTS = {
    "in-process loading, random crops": ["data.num_workers=0", "data.train_crop_steps=12"],
    "2 loader workers, random crops": ["data.num_workers=2", "data.train_crop_steps=12"],
}

pytestmark = pytest.mark.slow


def steps(path: Path) -> dict[int, dict]:
    """{global step: {epoch, ids}} as the probe recorded them."""
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def last_checkpoint(root: Path) -> Path:
    (last,) = root.glob("logs/train/runs/*/checkpoints/last.ckpt")
    return last


def kill_at_step(root: Path, step: int, *args: str, timeout: float = 600) -> Path:
    """Start a run, SIGKILL it as soon as its last.ckpt is the one of `step`, and return that checkpoint. The
    process is stopped (SIGSTOP) the moment a new last.ckpt appears, so it cannot run on while it is read."""
    log = root / "killed.log"
    proc = start("gru-mm-train", *args, env={PATH_ENV: str(root / "killed.jsonl")}, log=log)
    seen, deadline = None, time.time() + timeout
    try:
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            lasts = list(root.glob("logs/train/runs/*/checkpoints/last.ckpt"))
            inode = lasts[0].stat().st_ino if lasts else None  # atomic writes: each one is a new inode
            if inode is not None and inode != seen:
                proc.send_signal(signal.SIGSTOP)
                seen = inode
                if torch.load(lasts[0], weights_only=True)["global_step"] == step:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return lasts[0]
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.002)
        raise AssertionError(f"no last.ckpt of step {step} within {timeout} s")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, tmp_path_factory):
    """(args, the uninterrupted run's steps, its final weights)."""
    args = [*ARGS, *VARIANTS[request.param]]
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run("gru-mm-train", *args, f"paths.root={root}", env={PATH_ENV: str(root / "ids.jsonl")})
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = steps(root / "ids.jsonl")
    assert sorted(recorded) == list(range(3 * BATCHES_PER_EPOCH))
    return args, recorded, weights(last_checkpoint(root))


def test_a_run_killed_mid_epoch_resumes_with_the_rest_of_that_epoch_once_and_ends_alike(variant, tmp_path):
    args, uninterrupted, final = variant
    last = kill_at_step(tmp_path, KILL_AT_STEP, *args, f"paths.root={tmp_path}")
    saved = torch.load(last, weights_only=True)
    (order,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the sampler's place, saved
    assert (order["epoch"], order["position"]) == (1, KILL_AT_STEP - BATCHES_PER_EPOCH)

    result = run(
        "gru-mm-train",
        *args,
        "ckpt_path=last",
        f"paths.root={tmp_path}",
        env={PATH_ENV: str(tmp_path / "resumed.jsonl")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ckpt_path=last: resuming {last}" in result.stdout + result.stderr
    killed = {s: r for s, r in steps(tmp_path / "killed.jsonl").items() if s < KILL_AT_STEP}
    resumed = steps(tmp_path / "resumed.jsonl")
    assert sorted(resumed) == list(range(KILL_AT_STEP, 3 * BATCHES_PER_EPOCH))  # no step done twice
    # the interrupted epoch: every sample exactly once, between the killed run and the resumed one
    epoch = [i for r in [*killed.values(), *resumed.values()] if r["epoch"] == 1 for i in r["ids"]]
    assert sorted(epoch) == sorted(i for r in uninterrupted.values() if r["epoch"] == 0 for i in r["ids"])
    assert len(epoch) == len(set(epoch)) == 48
    # and batch for batch what the uninterrupted run trained on, through the next epoch
    assert killed | resumed == uninterrupted
    # the same weights at the end: same batches, same dropout draws, same optimiser steps
    ended = weights(last_checkpoint(tmp_path))
    assert ended.keys() == final.keys()
    different = [k for k in final if not torch.equal(ended[k], final[k])]
    assert not different, different
