"""Length-bucketing batch sampler: batches of similar length, so padding stays small; DDP-aware; resumable
mid-epoch (its place in the epoch is saved in checkpoints through `ResumableDataLoader`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from gru_mm.data.sources.base import DataError

# What fixes the order of an epoch's batches besides `seed` and `epoch`: a resumed position means
# nothing if any of these changed.
ORDER_SETTINGS = ("num_samples", "batch_size", "num_replicas", "shuffle", "bucket", "pool_batches")


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

    `state_dict()` is (epoch, seed, position): how many of this epoch's batches were handed out (the
    same count on every rank, which step together). After `load_state_dict()` the next iteration of
    that epoch starts at that position, so a resumed run sees each remaining batch once.
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
        draws: bool = False,
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
        # draws: yield (index, u) pairs, u uniform in [0, 1) fixed by (seed, epoch, batch number), for
        # random crops (`collate.Cropped`) that neither the worker reading the batch nor a resume changes
        self.draws = draws
        self.epoch = 0
        self.position = 0  # batches of this epoch handed out so far (this rank's share)
        self._resume_at: int | None = None  # a loaded position, for the next iteration of its epoch
        self._loaded: dict[str, Any] = {}
        # Lightning calls set_epoch on `batch_sampler.sampler`, not on the batch sampler itself.
        self.sampler = _EpochForwarder(self)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of each epoch: a new shuffle per epoch, the same on every
        rank."""
        if epoch != self.epoch:
            self._resume_at = None  # a loaded position belongs to its own epoch
            self.position = 0
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

    def __iter__(self) -> Iterator[list]:
        batches = self.all_batches()
        self.position = self.start_position()
        self._resume_at = None
        for number in range(self.rank + self.position * self.num_replicas, len(batches), self.num_replicas):
            self.position += 1
            batch = batches[number].tolist()
            if self.draws:
                u = np.random.default_rng([self.seed % 2**32, self.epoch, number]).random(len(batch))
                yield list(zip(batch, u.tolist(), strict=True))
            else:
                yield batch

    def start_position(self) -> int:
        """Where the next iteration starts: a loaded mid-epoch position, else 0."""
        if self._resume_at is None:
            return 0
        changed = [k for k in ORDER_SETTINGS if self._loaded.get(k) != self._order_settings()[k]]
        if changed:
            was = ", ".join(f"{k}={self._loaded.get(k)}" for k in changed)
            now = ", ".join(f"{k}={self._order_settings()[k]}" for k in changed)
            raise DataError(
                f"cannot resume the data order at batch {self._resume_at} of epoch {self.epoch}: the "
                f"checkpoint's order had {was}, this run has {now}; resume with the same data, batch size "
                "and number of processes, or from an end-of-epoch checkpoint"
            )
        return self._resume_at

    def _order_settings(self) -> dict[str, Any]:
        return {
            "num_samples": len(self.lengths),
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
            "bucket": self.bucket,
            "pool_batches": self.pool_batches,
        }

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Epoch, seed and position in the epoch (`position`: the caller's count of batches it consumed,
        when it reads ahead of what it used, as DataLoader workers do), with the settings that fix the
        order, so that a resume can tell whether the position still means the same batches."""
        position = self.position if position is None else position
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "position": position,
            "num_batches": len(self),
            **self._order_settings(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._loaded = dict(state)
        if self.position >= int(state["num_batches"]):
            # a finished epoch: the next one starts at its beginning (an iterator made before Lightning's
            # set_epoch, as one with workers is, must not replay the finished epoch)
            self.epoch, self.position, self._resume_at = self.epoch + 1, 0, None
        else:
            self._resume_at = self.position or None


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning saves in checkpoints: its batch sampler's epoch, seed and position.

    Lightning 2.6's fit loop stores `state_dict()` of every training loader that has one (the checkpoint's
    `loops.fit_loop.state_dict.combined_loader`) and hands it back to `load_state_dict()` before it
    iterates a resumed run's loader. The position counted here is what the training loop received, not
    what the sampler handed out (workers read ahead). Iteration starts at the first batch requested, after
    Lightning's `set_epoch`, and the workers' base seed comes from (seed, epoch) rather than torch's global
    generator: a resumed run's RNG states, restored from the checkpoint, then see the same draws as the
    uninterrupted run's.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, LengthBucketBatchSampler):
            raise TypeError(f"ResumableDataLoader needs a LengthBucketBatchSampler, got {self.batch_sampler}")
        if self.generator is None:
            self.generator = torch.Generator()
        self._consumed = 0
        self._consumed_epoch = 0

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        sampler = self.batch_sampler
        self._consumed, self._consumed_epoch = sampler.start_position(), sampler.epoch
        self.generator.manual_seed(sampler.seed * 1_000_003 + sampler.epoch)
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler = self.batch_sampler
        # between epochs (set_epoch called, nothing read yet) the new epoch is at its start
        consumed = self._consumed if self._consumed_epoch == sampler.epoch else 0
        return sampler.state_dict(position=consumed)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)
        self._consumed, self._consumed_epoch = self.batch_sampler.position, self.batch_sampler.epoch


class _EpochForwarder:
    def __init__(self, owner: LengthBucketBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)
