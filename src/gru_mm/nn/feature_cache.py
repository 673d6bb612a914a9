"""A frozen backbone's features, computed once per distinct input and kept on disk.

A frozen backbone maps the same input to the same features every epoch, so an encoder runs it once per
clip and later reads what it wrote. An entry's key is a digest of the clip itself (its real steps' shape,
dtype and bytes), under a folder per backbone: a digest of its weights (however they arrived: a file, a
checkpoint, a seed) and of the encoder's settings. Any change of data, weights or settings is a new key;
a crop or augmentation of the input is a new clip, computed (and stored) as such, never a wrong hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("gru_mm.nn")


def _update(h: Any, t: Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)


def tensor_digest(tensors: Mapping[str, Tensor] | list[Tensor], extra: Any = None) -> str:
    """A hex digest of tensors' names, dtypes, shapes and bytes (and of JSON-able `extra`)."""
    h = hashlib.sha1(usedforsecurity=False)  # a checksum, not a secret: sha1 hashes ~1 GB/s
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    items = sorted(tensors.items()) if isinstance(tensors, Mapping) else enumerate(tensors)
    for name, t in items:
        h.update(str(name).encode())
        _update(h, t)
    return h.hexdigest()


class FeatureCache:
    """Per-clip features of one backbone in `root/<namespace>/`, one `.npy` file per clip.

    `root` None keeps nothing (every call computes). `hits`/`misses` count clips (tests use them).
    Writes are atomic (a killed run leaves no half file); an unreadable entry is computed again, with a
    warning. A folder that cannot be written (a checkpoint's cache path on another machine) turns the
    disk cache off for this process, with a warning, instead of failing the run.
    """

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root).expanduser()
        self.hits = 0
        self.misses = 0
        self._warned = False

    def __getstate__(self) -> dict:  # spawned processes and deepcopies get the settings, not counters
        return {"root": self.root, "hits": 0, "misses": 0, "_warned": False}

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}.npy"

    def _read(self, path: Path) -> np.ndarray | None:
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            log.warning("cached features %s are unreadable (%s): computing them again", path, err)
            path.unlink(missing_ok=True)
            return None

    def _write(self, path: Path, value: np.ndarray) -> None:
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}-{threading.get_ident()}.npy")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
            os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._warned:
                log.warning(
                    "frozen features cannot be cached in %s (%s): computing them each time", path, err
                )
                self._warned = True
            self.root = None

    def features(
        self,
        clips: list[Tensor],
        namespace: str,
        compute: Callable[[list[int]], list[Tensor]],
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        """Each clip's features as float32 on `device`: read from disk, or computed by `compute(indices)`
        (the clips not on disk, all in one call) and stored. `clips` are on the CPU (they are hashed)."""
        out: list[Tensor | None] = [None] * len(clips)
        missing, paths = [], {}
        for i, clip in enumerate(clips):
            if self.root is None:
                missing.append(i)
                continue
            paths[i] = self._path(namespace, tensor_digest([clip]))
            cached = self._read(paths[i])
            if cached is None:
                missing.append(i)
            else:
                out[i] = torch.from_numpy(cached).to(device)
        self.hits += len(clips) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                computed = compute(missing)
            for i, value in zip(missing, computed, strict=True):
                out[i] = value.detach().float()
                if self.root is not None:
                    self._write(paths[i], out[i].cpu().numpy())
        return out


def _forget_digest(module: FrozenBackbone, incompatible_keys: Any) -> None:
    module._backbone_digest = None  # new weights: a new namespace


class FrozenBackbone:
    """For an encoder (an nn.Module) with a frozen `self.backbone`: features per clip through a
    `FeatureCache`, under a namespace that digests the backbone's weights (lazily, at the first call, and
    again after a `load_state_dict`), their dtype and the encoder's `settings`."""

    backbone: torch.nn.Module

    def init_feature_cache(self, cache_dir: str | Path | None, settings: Mapping[str, Any]) -> None:
        self.feature_cache = FeatureCache(cache_dir)
        self._cache_settings = {"encoder": type(self).__name__, **settings}
        self._backbone_digest: str | None = None
        self.register_load_state_dict_post_hook(_forget_digest)

    def feature_namespace(self) -> str:
        if self._backbone_digest is None:
            self._backbone_digest = tensor_digest(self.backbone.state_dict(), extra=self._cache_settings)
        dtype = str(next(self.backbone.parameters()).dtype).removeprefix("torch.")
        return f"{type(self).__name__}-{self._backbone_digest[:20]}-{dtype}"

    def frozen_features(
        self, x: Tensor, lengths: Tensor, compute: Callable[[list[Tensor]], list[Tensor]]
    ) -> tuple[list[int], list[Tensor]]:
        """(the samples with steps, their features [L_i', D]) for padded `x` [B, T, ...]: each sample's real
        steps `x[b, :lengths[b]]` are one clip; `compute` maps clips (on x's device) to their features."""
        rows = [b for b, n in enumerate(lengths.tolist()) if n > 0]
        on_cpu = x.detach().to("cpu")  # one copy per batch, for the digests
        clips = [on_cpu[b, : int(lengths[b])] for b in rows]

        def run(missing: list[int]) -> list[Tensor]:
            return compute([x[rows[i], : int(lengths[rows[i]])] for i in missing])

        return rows, self.feature_cache.features(clips, self.feature_namespace(), run, x.device)


def padded(
    rows: list[int], features: list[Tensor], batch: int, dim: int, device: torch.device, steps: int = 0
) -> tuple[Tensor, Tensor]:
    """[batch, T', dim] zeros with `features[i]` at row `rows[i]` (T': the longest, at least `steps`), and
    each row's length (int64, CPU)."""
    lengths = torch.zeros(batch, dtype=torch.int64)
    for b, f in zip(rows, features, strict=True):
        lengths[b] = f.shape[0]
    out = torch.zeros(batch, max(int(lengths.max()) if batch else 0, steps), dim, device=device)
    for b, f in zip(rows, features, strict=True):
        out[b, : f.shape[0]] = f
    return out, lengths
