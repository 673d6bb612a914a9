"""One shard of the store: a folder with one flat binary file per column and a small `index.json`.

A row's array is `shape` elements of `dtype` at `offset` bytes in `<column>.bin`; rows and columns
are read one at a time with `pread` (see `ShardReader.read` for why not a memory map). A shard is
written into a temporary folder and renamed to its name only when complete, so a folder with a
shard's name is a whole shard, and a killed writer leaves only a `.tmp-*` folder nobody reads.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
TMP_PREFIX = ".tmp-"
UINT8_UNIT = "uint8/255"  # floats k/255 (decoded 8-bit images) kept as their 8-bit k: a quarter the bytes


def compact(array: np.ndarray) -> tuple[np.ndarray, str]:
    """(what is written, its dtype tag): float32 values that are exactly k/255 become uint8 k; anything
    else is written as it is. Restoring gives back the very same float32 values (checked here)."""
    if array.dtype == np.float32 and array.size and array.min() >= 0 and array.max() <= 1:
        k = np.rint(array * 255).astype(np.uint8)
        if np.array_equal(restore(k, UINT8_UNIT), array):
            return k, UINT8_UNIT
    return array, array.dtype.str


def restore(array: np.ndarray, tag: str) -> np.ndarray:
    return array.astype(np.float32) / np.float32(255) if tag == UINT8_UNIT else array


def stored_dtype(tag: str) -> np.dtype:
    return np.dtype(np.uint8) if tag == UINT8_UNIT else np.dtype(tag)


class ShardWriter:
    """Rows appended one by one (`add`), then `commit()`: written to disk as they come, so writing a
    shard holds one row in memory, not the shard."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f"{TMP_PREFIX}{self.path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.ids: list[str] = []
        self.targets: list[Any] = []
        self.keys: list[Any] = []
        self.problems: list[list[list[str]]] = []
        self.columns: dict[str, dict[str, list]] = {}
        self._files: dict[str, Any] = {}

    @property
    def rows(self) -> int:
        return len(self.ids)

    def add(
        self,
        row_id: str,
        arrays: dict[str, np.ndarray | None],
        keys: Any = None,
        problems: list[list[str]] | None = None,
        target: Any = None,
    ) -> None:
        """One row: {column: array or None (absent)}; `keys` and `target` are JSON-able and kept as given;
        `problems` are [modality, kind, detail] lists."""
        j = len(self.ids)
        for column, array in arrays.items():
            c = self.columns.setdefault(column, {"offset": [0] * j, "shape": [None] * j, "dtype": [""] * j})
            if array is None:
                _append(c, 0, None, "")
                continue
            data, tag = compact(np.ascontiguousarray(array))
            fh = self._files.get(column)
            if fh is None:
                fh = self._files[column] = open(self.tmp / f"{column}.bin", "wb")  # noqa: SIM115
            _append(c, fh.tell(), list(array.shape), tag)
            fh.write(data.tobytes())
        for c in self.columns.values():  # columns this row lacks
            if len(c["shape"]) == j:
                _append(c, 0, None, "")
        self.ids.append(row_id)
        self.keys.append(keys)
        self.problems.append(list(problems or []))
        self.targets.append(target)

    def commit(self) -> Path:
        """Finish the files, then rename the folder into place (atomic). If another process (a rank
        started at the same time) committed the same shard first, its copy is kept and this one
        dropped: shards of one name hold the same rows."""
        sizes = {}
        for column, fh in self._files.items():
            sizes[column] = fh.tell()
            fh.close()
        index = {
            "format": FORMAT,
            "ids": self.ids,
            "targets": self.targets,
            "keys": self.keys,
            "problems": self.problems,
            "columns": self.columns,
            "bytes": sizes,
        }
        (self.tmp / "index.json").write_text(json.dumps(index, default=_plain))
        try:
            os.rename(self.tmp, self.path)
        except OSError:
            if not (self.path / "index.json").is_file():
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        for fh in self._files.values():
            fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _append(column: dict[str, list], offset: int, shape: list[int] | None, tag: str) -> None:
    column["offset"].append(offset)
    column["shape"].append(shape)
    column["dtype"].append(tag)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be kept in a shard index")


class IncompleteShard(Exception):
    """A shard folder whose files do not match its index (cut short): rebuilt, never read."""


class _Column:
    """One column's part of a shard's index as arrays (about 50 bytes a row, against ~250 as parsed
    JSON): byte offsets, shapes (-1 padded; ndim -1: absent) and dtype tags."""

    def __init__(self, c: dict[str, list]):
        n = len(c["shape"])
        rank = max((len(s) for s in c["shape"] if s is not None), default=0)
        self.offset = np.asarray(c["offset"], dtype=np.int64)
        self.ndim = np.full(n, -1, dtype=np.int8)
        self.shape = np.full((n, rank), -1, dtype=np.int64)
        for j, shape in enumerate(c["shape"]):
            if shape is not None:
                self.ndim[j] = len(shape)
                self.shape[j, : len(shape)] = shape
        self.tags = sorted(set(c["dtype"]))
        self.tag = np.asarray([self.tags.index(t) for t in c["dtype"]], dtype=np.uint8)

    def shape_of(self, j: int) -> tuple[int, ...] | None:
        ndim = int(self.ndim[j])
        return None if ndim < 0 else tuple(int(v) for v in self.shape[j, :ndim])


class ShardReader:
    """Reads rows of one committed shard. Holds its index compactly (ids, targets, and per column the
    offsets, shapes and dtypes as arrays) and opens its files on first read in each process
    (DataLoader workers open their own)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        index = self._index()
        if index.get("format") != FORMAT:
            raise IncompleteShard(f"{self.path}: format {index.get('format')}, expected {FORMAT}")
        for column, size in index["bytes"].items():
            file = self.path / f"{column}.bin"
            if not file.is_file() or file.stat().st_size != size:
                raise IncompleteShard(f"{file} is not {size} bytes")
        self.ids: list[str] = index["ids"]
        self.targets: list[Any] = index["targets"]
        # decode problems of the few rows that have any
        self._problems = {j: p for j, p in enumerate(index["problems"]) if p}
        self.columns = {column: _Column(c) for column, c in index["columns"].items()}
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()

    def _index(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "index.json").read_text())
        except (OSError, ValueError) as err:
            raise IncompleteShard(f"{self.path}: {err}") from None

    @property
    def rows(self) -> int:
        return len(self.ids)

    def keys(self) -> list[Any]:
        """Each row's keys, as added (read again from disk: only a rebuild needs them)."""
        return self._index()["keys"]

    def problems(self, j: int) -> list[list[str]]:
        return self._problems.get(j, [])

    def shape(self, column: str, j: int) -> tuple[int, ...] | None:
        c = self.columns.get(column)
        return None if c is None else c.shape_of(j)

    def read(self, column: str, j: int) -> np.ndarray | None:
        """Row j's array of `column` (None: absent), as it was added.

        Read with `pread` into a fresh array rather than sliced from a memory map: the pages of a map
        that a process has touched count in its resident memory (in every DataLoader worker, for
        every sample it ever read), which would grow with the data set; `pread` goes through the same
        page cache but leaves nothing behind in the process (docs/benchmarks.md, "Store choice")."""
        c = self.columns.get(column)
        shape = None if c is None else c.shape_of(j)
        if shape is None:
            return None
        tag = c.tags[c.tag[j]]
        out = np.empty(shape, dtype=stored_dtype(tag))
        if out.nbytes:
            offset = int(c.offset[j])
            got = os.preadv(self._fd(column), [memoryview(out).cast("B")], offset)
            if got != out.nbytes:
                raise IncompleteShard(f"{self.path}/{column}.bin: read {got} of {out.nbytes} bytes")
        return restore(out, tag)

    def _fd(self, column: str) -> int:
        if self._pid != os.getpid():  # a forked worker: descriptors of its own
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(column)
        if fd is None:
            fd = self._fds[column] = os.open(self.path / f"{column}.bin", os.O_RDONLY)
        return fd

    def __getstate__(self) -> dict[str, Any]:  # spawned DataLoader workers reopen the files
        return {**self.__dict__, "_fds": {}}

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
