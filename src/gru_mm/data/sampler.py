"""Length-bucketing batch sampler: batches of similar length, so padding stays small; DDP-aware."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Yields index batches whose samples have similar lengths.

    `lengths` is one length per sample, or one row per sample with one column per modality. Each
    epoch: shuffle (seed + epoch), fix the batch sizes (equal, differing by at most one), cut the
    order into pools of `pool_batches` batches, arrange each pool so that every batch holds samples
    of similar length in every modality (see `_arrange`), shuffle the batch order. Every rank builds
    the same list and takes every `num_replicas`-th batch, so ranks get disjoint batches and the same
    number of them, and no sample is lost or repeated. The batch
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
        if self.lengths.ndim == 1:
            self.lengths = self.lengths[:, None]
        # The modality with the most steps is bucketed first: its padding costs the most.
        self._dims = list(np.argsort(-self.lengths.mean(0), kind="stable"))
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
        """Lightning calls this at the start of each epoch: a new shuffle per epoch, the same on every
        rank."""
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
        batches = np.array_split(order, self._num_batches_total())
        if self.bucket:
            sizes = [len(b) for b in batches]
            batches, start = [], 0
            for i in range(0, len(sizes), self.pool_batches):
                pool_sizes = sizes[i : i + self.pool_batches]
                end = start + sum(pool_sizes)
                batches += self._arrange(order[start:end], pool_sizes, self._dims)
                start = end
        batches = [b if len(b) else order[i % len(order) : i % len(order) + 1] for i, b in enumerate(batches)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _arrange(self, pool: np.ndarray, sizes: list[int], dims: list[int]) -> list[np.ndarray]:
        """Cut `pool` into batches of `sizes` whose samples have similar lengths in every modality.

        Sorting by one total length (the old key) mixes short and long sequences of each modality
        when their lengths are independent (avdigits: padding ratio 1.55). Instead, like a k-d tree:
        sort by the first modality, cut into about n^(1/M) runs of whole batches, and arrange each run
        by the remaining modalities (1.12 on avdigits; docs/benchmarks.md, "Padding").
        """
        if len(sizes) == 1:
            return [pool]
        # stable sorts keep the shuffled order among equal lengths
        pool = pool[np.argsort(self.lengths[pool, dims[0]], kind="stable")]
        if len(dims) == 1:
            return np.split(pool, np.cumsum(sizes)[:-1])
        runs = np.array_split(np.asarray(sizes), max(1, round(len(sizes) ** (1 / len(dims)))))
        parts = np.split(pool, np.cumsum([r.sum() for r in runs])[:-1])
        return [
            b
            for part, run in zip(parts, runs, strict=True)
            for b in self._arrange(part, run.tolist(), dims[1:])
        ]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.all_batches()[self.rank :: self.num_replicas]:
            yield batch.tolist()


class _EpochForwarder:
    def __init__(self, owner: LengthBucketBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)
