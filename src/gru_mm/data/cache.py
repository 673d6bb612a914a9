"""A tiny on-disk cache keyed by a fingerprint of the settings that produced the value."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# np.load parses every array header with ast.literal_eval, and CPython 3.11's AST construction is not
# thread-safe ("SystemError: AST constructor recursion depth mismatch", gh-106905), so the decoding
# threads take turns reading .npy/.npz files; decoding itself still runs in parallel.
NUMPY_READ_LOCK = threading.Lock()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with NUMPY_READ_LOCK, np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def read_npy(path: Path) -> np.ndarray:
    with NUMPY_READ_LOCK:
        return np.load(path, allow_pickle=False)


def fingerprint(settings: dict[str, Any]) -> str:
    """A stable short hash of JSON-able settings: any change gives a new cache entry."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_key(settings: dict[str, Any], files: list[Path]) -> str:
    """What a decoded value depends on: its settings and each source file's path, size and modification
    time (a file edited in place, or replaced by one of another size, decodes again)."""
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return fingerprint({"settings": settings, "files": stats})


def cached(path: Path, build: Callable[[], Any]) -> Any:
    """Load `path` if it exists, else build, save atomically (a killed run leaves no half file), return."""
    if path.exists():
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # a corrupt cache entry is rebuilt, not trusted
            path.unlink(missing_ok=True)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(value, tmp)
    os.replace(tmp, path)
    return value


class FeatureCache:
    """Per-sample decoded arrays on disk, one `.npz` per (file, transform settings): the decode cache of
    `data.storage=memory` (kept to compare with; the store, gru_mm.data.store, is the cache otherwise).

    The key hashes the transform's settings and the source file's path, size and modification time,
    so editing a file or changing a setting decodes again, and nothing else does. `hits`/`misses`
    count lookups (tests use them to prove a second load decodes nothing).
    """

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root)
        self.hits = 0
        self.misses = 0
        self._count_lock = threading.Lock()  # rows are decoded by several threads

    def _count(self, hit: bool) -> None:
        with self._count_lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def key(self, settings: dict[str, Any], files: list[Path]) -> str:
        return file_key(settings, files)

    def get(self, kind: str, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """{name: array} from the cache, else from `build()` (saved atomically unless caching is off)."""
        if self.root is None:
            self._count(hit=False)
            return build()
        path = self.root / kind / key[:2] / f"{key}.npz"
        if path.exists():
            try:
                value = read_npz(path)
                self._count(hit=True)
                return value
            except (OSError, ValueError, EOFError):  # a corrupt entry is rebuilt, not trusted
                path.unlink(missing_ok=True)
        self._count(hit=False)
        value = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}-{threading.get_ident()}.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, **value)
        os.replace(tmp, path)
        return value
