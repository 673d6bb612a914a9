"""The batches an evaluation reads."""

from __future__ import annotations


def full_test_loader(datamodule):
    """The whole test split in one process (the datamodule shards by the attached trainer's world size)."""
    trainer = getattr(datamodule, "trainer", None)
    datamodule.trainer = None
    try:
        return datamodule.test_dataloader()
    finally:
        datamodule.trainer = trainer
