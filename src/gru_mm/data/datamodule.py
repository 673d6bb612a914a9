"""The LightningDataModule: a source's splits -> length-bucketed DataLoaders of `Batch`es."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from gru_mm.data.collate import Collate
from gru_mm.data.sampler import LengthBucketBatchSampler


def sample_length(sample, mean_lengths: dict[str, float]) -> float:
    """Bucketing key: the sum of each modality's length relative to its mean, so no modality dominates."""
    total = 0.0
    for m, mean in mean_lengths.items():
        a = sample.modalities.get(m)
        total += (0 if a is None else len(a)) / mean
    return total


class SequenceDataModule(pl.LightningDataModule):
    def __init__(
        self,
        source,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        bucket: bool = True,
        pool_batches: int = 50,
        seed: int = 0,
    ):
        super().__init__()
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.bucket = bucket
        self.pool_batches = pool_batches
        self.seed = seed
        self.collate = Collate(source.feature_shapes)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.source.feature_shapes

    def prepare_data(self) -> None:
        # Runs on one process per node: generate or decode into the cache once.
        self.source.load()

    def _replicas(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        samples = self.source.split(split)
        present = [[s.modalities.get(m) for s in samples] for m in self.source.feature_shapes]
        means = {
            m: max(1.0, sum(0 if a is None else len(a) for a in arrays) / max(1, len(arrays)))
            for m, arrays in zip(self.source.feature_shapes, present, strict=True)
        }
        replicas, rank = self._replicas()
        sampler = LengthBucketBatchSampler(
            [sample_length(s, means) for s in samples],
            batch_size,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            pool_batches=self.pool_batches,
            bucket=self.bucket,
        )
        return DataLoader(
            samples,
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)
