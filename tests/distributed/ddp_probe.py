"""A callback the DDP tests add from the command line (+callbacks.probe=...): each rank writes the sample ids
of the batches it saw, so a test can check that ranks get disjoint data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl


class RecordBatchIds(pl.Callback):
    """The first epoch's ids (later epochs reshuffle: ranks are disjoint within an epoch, not across)."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.seen: dict[str, list[str]] = {"train": [], "val": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.seen["train"] += list(batch.ids)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            self.seen["val"] += list(batch.ids)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"world_size": trainer.world_size, **self.seen}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class SlowEpochs(pl.Callback):
    """Sleeps after each training epoch (after its checkpoint), so a test can act while a job is running."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)
