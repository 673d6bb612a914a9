"""Checkpoint writes survive kills: never a truncated file, never a last.ckpt whose best checkpoint is
gone."""

from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from faults_testlib import REPO, cli_env, wait_for
from pytorch_lightning.callbacks import ModelCheckpoint

import cli_zygote
from gru_mm.checkpoints import AtomicCheckpointIO, load


@pytest.mark.slow
def test_a_kill_during_a_write_leaves_a_whole_file(tmp_path):
    path = tmp_path / "ckpt" / "last.ckpt"
    path.parent.mkdir()
    for kill in range(5):
        log = tmp_path / f"writer{kill}.log"
        # tests/faults/atomic_writer.py, forked from the test zygote
        proc = cli_zygote.popen(
            [sys.executable, "-m", "atomic_writer", str(path)], env=cli_env(), cwd=REPO, log=log
        )
        started = lambda log=log: "writing" in log.read_text()  # noqa: E731
        wait_for(started, 120, "the writer started", proc, logs=[log], every=0.02)
        time.sleep(random.uniform(0.05, 0.6))  # a 16 MB write takes about as long: the kill lands in one
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        if path.exists():
            assert load(path)["weights"].shape == (4_000_000,), kill  # whole, readable
    for leftover in path.parent.iterdir():  # an interrupted write leaves at most a hidden temporary file
        assert leftover == path or (leftover.name.startswith(".last.ckpt.") and leftover.suffix == ".tmp")


class _Improving(pl.LightningModule):
    """A tiny model whose validation score improves every epoch: each epoch replaces the best checkpoint."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("score", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Watched(AtomicCheckpointIO):
    """Looks at the folder after every write and removal (changes nothing): what a kill at that moment
    leaves."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder, self.seen = folder, []

    def _look(self, what):
        last = self.folder / "last.ckpt"
        named = None
        if last.exists():
            state = next(v for k, v in load(last)["callbacks"].items() if k.startswith("ModelCheckpoint"))
            named = state["best_model_path"]
        self.seen.append((what, named, named is None or Path(named).exists()))

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        super().save_checkpoint(checkpoint, path, storage_options)
        self._look(f"wrote {Path(path).name}")

    def remove_checkpoint(self, path):
        super().remove_checkpoint(path)
        self._look(f"asked to remove {Path(path).name}")


def test_last_ckpt_never_names_a_best_checkpoint_that_is_gone(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    io = _Watched(tmp_path)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path, monitor="score", mode="max", save_top_k=1, save_last=True, filename="best{epoch}"
    )
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[checkpoint],
        plugins=[io],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_Improving(), data, data)
    assert sum(what.startswith("asked to remove best") for what, _, _ in io.seen) == 2  # two bests replaced
    assert all(ok for _, _, ok in io.seen), io.seen
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [
        "bestepoch=2.ckpt",
        "last.ckpt",
    ]  # the old ones went
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (tmp_path / "last.ckpt").stat().st_mode == plain.stat().st_mode  # shared as a plain write would be
