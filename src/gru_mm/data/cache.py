"""A tiny on-disk cache keyed by a fingerprint of the settings that produced the value."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def fingerprint(settings: dict[str, Any]) -> str:
    """A stable short hash of JSON-able settings: any change gives a new cache entry."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
