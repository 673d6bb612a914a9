"""What every data source offers the datamodule, and how sources report bad data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from gru_mm.data.batch import Sample

Task = Literal["multiclass", "binary", "multilabel", "regression"]
TASKS: tuple[str, ...] = ("multiclass", "binary", "multilabel", "regression")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def launch_rank() -> tuple[int, int]:
    """(rank, world size) of this process as its launcher set them (torchrun: RANK/WORLD_SIZE; SLURM:
    SLURM_PROCID/SLURM_NTASKS); (0, 1) otherwise. Read before Lightning sets anything up, so that ranks
    started together can split the first decoding of a data set between them."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        rank, world = os.environ.get(rank_var, ""), os.environ.get(world_var, "")
        if rank.isdigit() and world.isdigit() and int(rank) < int(world):
            return int(rank), int(world)
    return 0, 1


@runtime_checkable
class Source(Protocol):
    """A data set as lists of `Sample`s per split.

    Constructing a source reads nothing (so config errors fail first); the properties may read the
    cheap parts (a manifest table, an array header) on first use; `load()` reads and decodes
    everything (through the disk cache) and is idempotent.
    Optional extras the datamodule uses when present: `vocab_sizes` ({modality: tokens}), `kinds`
    ({modality: kind name}, see `gru_mm.data.kinds`) and `problems` (a list of `Problem`s found by
    `load()`; samples with problems are left out of the splits).
    """

    task: str

    @property
    def feature_shapes(self) -> Mapping[str, tuple[int, ...]]: ...

    @property
    def num_classes(self) -> int: ...

    def load(self) -> object: ...

    def split(self, name: str) -> list[Sample]: ...


class LoadedSource:
    """What the file-backed sources (manifest, features) answer from their own `load()`.

    A subclass implements `load() -> {split: [Sample]}` and fills `_shapes`, `labels` and `_problems`.
    """

    _shapes: dict[str, tuple[int, ...]]
    _problems: list[Problem]

    def load(self) -> dict[str, list[Sample]]:
        raise NotImplementedError

    @property
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        self.load()
        return dict(self._shapes)

    @property
    def num_classes(self) -> int:
        self.load()
        return self.labels.num_outputs

    @property
    def problems(self) -> list[Problem]:
        """What load() found; the samples they concern are left out of the splits."""
        self.load()
        return list(self._problems)

    def split(self, name: str) -> list[Sample]:
        return self.load()[name]


@dataclass(frozen=True)
class Problem:
    """One defect in the data: which sample, which column, what kind, details."""

    id: str
    modality: str
    kind: str
    detail: str = ""
    # Problems that no skipping can fix (an empty split, an unusable column) fail even with on_error=skip.
    fatal: bool = False

    def line(self) -> str:
        return f"{self.id}\t{self.modality}\t{self.kind}" + (f": {self.detail}" if self.detail else "")


class DataError(ValueError):
    """Data a user gave that cannot be used at all (missing file, unknown format); one sentence."""


class SampleError(Exception):
    """Raised by a decoder for one value; becomes a `Problem` for that sample and column."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class DataProblems(DataError):
    """Validation found problems; the message lists them (the first `shown`)."""

    def __init__(self, problems: list[Problem], where: str, shown: int = 20):
        self.problems = problems
        lines = "\n".join(p.line() for p in problems[:shown])
        more = f"\n... and {len(problems) - shown} more" if len(problems) > shown else ""
        super().__init__(
            f"{where} has {len(problems)} data problem(s) (id, column, problem); fix them, or set "
            "data.on_error=skip to leave those samples out (gru-mm-validate-data lists them all):"
            f"\n{lines}{more}"
        )


STORAGES: tuple[str, ...] = ("store", "memory")


def check_storage(storage: str) -> str:
    """data.storage: `store` (decoded once into shards on disk, read by index: gru_mm.data.store) or
    `memory` (every decoded sample in RAM: the path before the store, kept to compare with)."""
    if storage not in STORAGES:
        raise DataError(f"data.storage={storage!r} must be one of {', '.join(STORAGES)}")
    return storage


def check_fractions(fractions, key: str = "data.source.split_fractions") -> tuple[float, float, float]:
    """(train, val, test) shares that sum to 1; a config error otherwise (checked before data is read)."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise DataError(
            f"{key} must be three non-negative numbers (train, val, test) summing to 1, got {list(fractions)}"
        )
    return values  # type: ignore[return-value]


def seeded_split(ids: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """id -> split, from a seeded shuffle of the sorted ids: the same ids give the same split in any
    row order.

    Every non-empty share gets at least one sample when there are enough samples.
    """
    order = np.random.default_rng(seed).permutation(sorted(ids)).tolist()
    n = len(order)
    n_val = round(fractions[1] * n)
    n_test = round(fractions[2] * n)
    if n >= 3:
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    n_train = n - n_val - n_test
    names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return dict(zip(order, names, strict=True))
