"""A split read from the store: a sequence of `Sample`s, each read from its shard when indexed.

What the sampler and the loss need (ids, targets, lengths per modality) is kept in memory, a few
numbers per sample; the arrays stay on disk until a DataLoader worker asks for that sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gru_mm.data.batch import Sample
from gru_mm.data.store.shard import ShardReader

# column -> (decoded array, its times or None) -> the array the model sees (series: standardised)
Prepare = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


class StoreSplit(Sequence[Sample]):
    """Samples at (shard, row) places; `prepare` turns a stored array into what the model sees."""

    def __init__(
        self,
        shards: Sequence[ShardReader],
        places: Sequence[tuple[int, int]],
        targets: Sequence[Any],
        columns: Sequence[str],
        prepare: Mapping[str, Prepare] | None = None,
        times: bool = True,
        owner: Any = None,
    ):
        self.shards = list(shards)
        self.places = np.asarray(places, dtype=np.int64).reshape(-1, 2)
        self.targets = list(targets)
        self.columns = list(columns)
        self.prepare = dict(prepare or {})
        self.times = times
        self.owner = owner  # what keeps the shards' folder alive (a temporary store), if anything
        self.ids = [self.shards[s].ids[j] for s, j in self.places]

    def __len__(self) -> int:
        return len(self.places)

    def lengths(self, modalities: Sequence[str]) -> np.ndarray:
        """[N, M] steps per sample and modality (0: absent), from the shards' indexes alone."""
        out = np.zeros((len(self), len(modalities)), dtype=np.int64)
        for i, (s, j) in enumerate(self.places):
            for k, m in enumerate(modalities):
                shape = self.shards[s].shape(m, j)
                out[i, k] = 0 if shape is None else shape[0]
        return out

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        s, j = self.places[i]
        shard = self.shards[s]
        modalities: dict[str, np.ndarray | None] = {}
        times: dict[str, np.ndarray] = {}
        for m in self.columns:
            data = shard.read(m, j)
            t = shard.read(f"{m}.times", j) if self.times and data is not None else None
            if t is not None:
                times[m] = t
            if data is not None and m in self.prepare:
                data = self.prepare[m](data, t)
            modalities[m] = data
        return Sample(self.ids[i], self.targets[i], modalities, times)


class prepare_with:
    """`kind.prepare` with the training split's statistics, as a picklable callable (spawned workers)."""

    def __init__(self, kind: Any, stats: Mapping[str, Any] | None):
        self.kind = kind
        self.stats = stats

    def __call__(self, data: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        return self.kind.prepare(data, times, self.stats)
