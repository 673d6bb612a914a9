"""Finding and reading checkpoints for resume and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    pass


def find_last(log_dir: str | Path, experiment_name: str) -> Path:
    """The newest `last.ckpt` under log_dir written by a run of `experiment_name`."""
    candidates = sorted(Path(log_dir).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if read_meta(path).get("experiment_name") == experiment_name:
            return path
    raise CheckpointError(f"ckpt_path=last: no last.ckpt of experiment {experiment_name!r} under {log_dir}")


def resolve(ckpt_path: str | None, log_dir: str | Path, experiment_name: str) -> Path | None:
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        return find_last(log_dir, experiment_name)
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such file")
    return path


def load(path: str | Path) -> dict[str, Any]:
    try:
        # Our own checkpoints hold the config (plain containers) and Lightning's loop state.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"ckpt_path={path}: not a readable checkpoint ({err})") from err


def read(path: str | Path) -> dict[str, Any]:
    """The whole checkpoint, or {} when it cannot be read (callers say what they miss in it)."""
    try:
        return load(path)
    except CheckpointError:
        return {}


def read_meta(path: str | Path) -> dict[str, Any]:
    """The `gru_mm` entry our LightningModule stores: resolved config, MLflow run id, experiment name."""
    return read(path).get("gru_mm", {})
