"""Length-bucketing batch sampler: batches of similar length, so padding stays small; DDP-aware."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Yields index batches whose samples have similar lengths.

    Each epoch: shuffle (seed + epoch), cut into pools of `pool_batches` batches, sort each pool by
    length, split the whole order into equal-size batches (sizes differ by at most one), shuffle the
    batch order. Every rank builds the same list and takes every `num_replicas`-th batch, so ranks
    get disjoint batches and the same number of them, and no sample is lost or repeated. The batch
    count is rounded up to a multiple of `num_replicas` by making batches slightly smaller rather
    than by repeating samples (as DistributedSampler would). Only when there are fewer samples than
    batches (a tiny split over many processes) does a batch borrow one repeated sample, so that no
    rank gets an empty batch.
    """

    def __init__(
        self,
        lengths: Sequence[float],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pool_batches: int = 50,
        bucket: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.lengths = np.asarray(lengths, dtype=np.float64)
        if len(self.lengths) < num_replicas:
            raise ValueError(f"{len(self.lengths)} samples cannot be split over {num_replicas} processes")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.pool_batches = pool_batches
        self.bucket = bucket
        self.epoch = 0
        # Lightning calls set_epoch on `batch_sampler.sampler`, not on the batch sampler itself.
        self.sampler = _EpochForwarder(self)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of each epoch: a new shuffle per epoch, the same on every rank."""
        self.epoch = epoch

    def _num_batches_total(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        return -(-n // self.num_replicas) * self.num_replicas

    def __len__(self) -> int:
        return self._num_batches_total() // self.num_replicas

    def all_batches(self) -> list[np.ndarray]:
        """Every rank's batches, in order (rank r takes batches r, r + R, ...)."""
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        if self.bucket:
            pool = self.batch_size * self.pool_batches
            chunks = [order[i : i + pool] for i in range(0, len(order), pool)]
            # stable sort keeps the shuffled order among equal lengths
            order = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")] for c in chunks])
        batches = np.array_split(order, self._num_batches_total())
        batches = [b if len(b) else order[i % len(order) : i % len(order) + 1] for i, b in enumerate(batches)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.all_batches()[self.rank :: self.num_replicas]:
            yield batch.tolist()


class _EpochForwarder:
    def __init__(self, owner: LengthBucketBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)
