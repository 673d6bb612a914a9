"""Building the store's shards: the missing ones only, rows decoded in parallel processes.

A shard's name is a digest of what its rows are (ids, and per column a key hashing the decode settings
and the source files' path, size and modification time), so a shard on disk under that name is
exactly the decoded rows asked for: nothing is re-validated, and any change (a file, a setting) names
other shards. When a shard must be (re)built, rows whose key is already in another shard are copied
from it (`StoreCache`), so only the rows that changed are decoded.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gru_mm.data.store.shard import TMP_PREFIX, IncompleteShard, ShardReader, ShardWriter

log = logging.getLogger("gru_mm.data")
STALE_TMP_S = 24 * 3600  # a .tmp- folder this old is left by a killed build: removed


@dataclass
class Decoded:
    """One row as a decoding process returns it."""

    id: str
    arrays: dict[str, np.ndarray | None]  # column (and `<column>.times`) -> array, None: absent
    problems: list[list[str]] = field(default_factory=list)  # [modality, kind, detail]
    target: Any = None
    hits: int = 0  # files read from other shards instead of decoded
    misses: int = 0  # files decoded


@dataclass
class ShardPlan:
    """A shard to have on disk: its name and the rows (whatever `decode` takes) in it, with their keys."""

    digest: str
    rows: list[Any]
    keys: list[Any]


class Store:
    """A folder of shards, `<root>/<digest>/`, shared by every data set and setting that uses it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._readers: dict[str, ShardReader] = {}
        self._key_index: dict[str, tuple[str, str, int]] | None = None

    def reader(self, digest: str) -> ShardReader | None:
        """The committed shard of that name, None if there is none (or it is incomplete)."""
        if digest not in self._readers:
            path = self.root / digest
            if not (path / "index.json").is_file():
                return None
            try:
                self._readers[digest] = ShardReader(path)
            except IncompleteShard as err:
                log.warning("store: %s; building it again", err)
                shutil.rmtree(path, ignore_errors=True)
                return None
        return self._readers[digest]

    def key_index(self) -> dict[str, tuple[str, str, int]]:
        """{row column key: (shard, column, row)} over every committed shard: what a rebuilt shard can
        copy instead of decoding."""
        if self._key_index is None:
            self._key_index = {}
            for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
                if path.name.startswith(TMP_PREFIX) or not path.is_dir():
                    continue
                shard = self.reader(path.name)
                for j, keys in enumerate(shard.keys() if shard else []):
                    for column, key in (keys or {}).items():
                        if key is not None and shard.shape(column, j) is not None:
                            self._key_index.setdefault(key, (path.name, column, j))
        return self._key_index

    def copy(self, key: str) -> dict[str, np.ndarray] | None:
        """{"data": array, "times": array (if kept)} of a decoded value with this key, or None."""
        where = self.key_index().get(key)
        if where is None:
            return None
        shard = self.reader(where[0])
        if shard is None:
            return None
        data = shard.read(where[1], where[2])
        times = shard.read(f"{where[1]}.times", where[2])
        return {"data": data} if times is None else {"data": data, "times": times}

    def remove_stale_tmp(self) -> None:
        """`.tmp-` folders of builds killed long ago (a recent one may be another rank's, still writing)."""
        now = time.time()
        for path in self.root.glob(f"{TMP_PREFIX}*") if self.root.is_dir() else []:
            try:
                if now - path.stat().st_mtime > STALE_TMP_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass

    def build(
        self,
        plans: Sequence[ShardPlan],
        decode: Callable[[Any], Decoded],
        processes: int = 1,
        desc: str = "decoding",
        rank: int = 0,
        world: int = 1,
    ) -> tuple[int, int]:
        """Commit every planned shard that is not on disk; returns (files decoded, files copied).

        Ranks started together (SLURM, torchrun) build their share of the missing shards first (shard
        r, r + w, ...), then the rest unless another rank has committed it meanwhile, so a first run
        decodes most shards once. (No lock: flock can hang on network filesystems, and a shard built
        twice is only wasted time, as commits are atomic renames.)
        """
        missing = [p for p in plans if self.reader(p.digest) is None]
        if not missing:
            return 0, 0
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_stale_tmp()
        self.key_index()  # built before forking, so that decoding processes share it
        missing = missing[rank::world] + [p for i, p in enumerate(missing) if i % world != rank]
        decoded = copied = 0
        with (
            _decoder(decode, processes) as run,
            tqdm(
                total=sum(len(p.rows) for p in missing),
                desc=desc,
                unit="row",
                delay=1.0,
                disable=None,
                leave=False,
            ) as bar,
        ):
            for plan in missing:
                if self.reader(plan.digest) is not None:  # another rank committed it
                    bar.update(len(plan.rows))
                    continue
                writer = ShardWriter(self.root / plan.digest)
                try:
                    for row, key in zip(run(plan.rows), plan.keys, strict=True):
                        writer.add(row.id, row.arrays, key, row.problems, row.target)
                        decoded += row.misses
                        copied += row.hits
                        bar.update()
                    writer.commit()
                except BaseException:
                    writer.abort()
                    raise
        return decoded, copied


class _decoder:
    """A context giving `run(rows) -> iterator of Decoded`, in order: in this process for one process
    (and a debugger or a test's patch sees every call), else in a pool of forked processes; one torch
    thread each either way (decoding is CPU-bound Python and torch: threads gained 0.73-0.85x on 2
    cores, and torch's own threads on small transforms spin in their barriers when cores are busy)."""

    def __init__(self, decode: Callable[[Any], Decoded], processes: int):
        self.decode = decode
        self.processes = processes
        self.pool: ProcessPoolExecutor | None = None
        self.threads: int | None = None

    def __enter__(self) -> Callable[[list[Any]], Iterator[Decoded]]:
        if self.processes <= 1:
            import torch

            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)
            return lambda rows: map(self.decode, rows)
        global _DECODE
        _DECODE = self.decode  # inherited by the forked processes: no pickling of the source
        self.pool = ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("fork"), initializer=_one_thread
        )
        return lambda rows: self.pool.map(_decode_in_process, rows, chunksize=2)

    def __exit__(self, *exc: object) -> None:
        global _DECODE
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            _DECODE = None


_DECODE: Callable[[Any], Decoded] | None = None


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _decode_in_process(row: Any) -> Decoded:
    assert _DECODE is not None
    return _DECODE(row)


class StoreCache:
    """What the modality kinds decode through on the store path (the memory path's `FeatureCache`):
    a value whose key is in a committed shard is copied from it, anything else is decoded. `hits` and
    `misses` count files copied and decoded."""

    def __init__(self, store: Store):
        self.store = store
        self.hits = 0
        self.misses = 0

    def key(self, settings: dict[str, Any], files: list[Path]) -> str:
        from gru_mm.data.cache import file_key

        return file_key(settings, files)

    def get(self, kind: str, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        value = self.store.copy(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        return build()
