"""A training callback that records which samples each step trains on (one JSON line per step), in the
file named by $GRU_MM_TEST_BATCH_IDS. Importable by the CLI subprocesses of tests/faults."""

from __future__ import annotations

import json
import os

import pytorch_lightning as pl

PATH_ENV = "GRU_MM_TEST_BATCH_IDS"


class RecordBatchIds(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        line = {"epoch": trainer.current_epoch, "step": trainer.global_step, "ids": list(batch.ids)}
        with open(os.environ[PATH_ENV], "a") as f:
            f.write(json.dumps(line) + "\n")
