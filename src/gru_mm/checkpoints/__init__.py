"""Checkpoints: finding them (resume, evaluation), reading them safely, writing them atomically.

`trust` decides what a checkpoint's config may build, `io` reads (weights_only) and writes (atomically),
`rng` carries the random-number states that make a resumed run exact.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gru_mm.checkpoints.errors import CheckpointError
from gru_mm.checkpoints.io import AtomicCheckpointIO, atomic_save, load
from gru_mm.checkpoints.rng import RandomState
from gru_mm.checkpoints.trust import check_config, trusted_config

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "RandomState",
    "atomic_save",
    "check_config",
    "find_last",
    "is_finished",
    "load",
    "mark_finished",
    "read_meta",
    "resolve",
    "trusted_config",
]

log = logging.getLogger("gru_mm.checkpoints")
FINISHED = "finished"  # written next to last.ckpt when the run's fit completes: `ckpt_path=last` skips it


def mark_finished(ckpt_dir: str | Path) -> None:
    path = Path(ckpt_dir) / FINISHED
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this run's training completed; ckpt_path=last resumes only unfinished runs\n")


def is_finished(last: str | Path) -> bool:
    return (Path(last).parent / FINISHED).is_file()


def find_last(log_dir: str | Path, experiment_name: str, unfinished_only: bool = False) -> Path:
    """The newest `last.ckpt` under log_dir of a run of `experiment_name`; with `unfinished_only` (resuming),
    of a run whose fit has not completed.

    A last.ckpt that cannot be read is an error naming it: skipping it would silently take an older run.
    """
    candidates = sorted(
        Path(log_dir).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    finished = 0
    for path in candidates:
        if unfinished_only and is_finished(path):
            finished += 1
            continue
        meta = read_meta(path)
        if meta.get("experiment_name") == experiment_name:
            log.info(
                "ckpt_path=last: %s %s (epoch %s, MLflow run %s)",
                "resuming" if unfinished_only else "taking",
                path,
                meta.get("_epoch"),
                meta.get("mlflow_run_id"),
            )
            return path
    done = f" ({finished} finished run(s) skipped: give ckpt_path=PATH to continue one)" if finished else ""
    which = "unfinished run" if unfinished_only else "last.ckpt"
    raise CheckpointError(
        f"ckpt_path=last: no {which} of experiment {experiment_name!r} under {log_dir}{done}"
    )


def resolve(
    ckpt_path: str | None, log_dir: str | Path, experiment_name: str, unfinished_only: bool = False
) -> Path | None:
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        return find_last(log_dir, experiment_name, unfinished_only)
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such file")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The `gru_mm` entry our LightningModule stores (resolved config, MLflow run id, experiment name), with
    the checkpoint's epoch as `_epoch`; a CheckpointError naming the file when it cannot be read."""
    ckpt = load(path)
    meta = ckpt.get("gru_mm")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a gru-mm checkpoint (it holds no gru_mm entry)")
    return {**meta, "_epoch": ckpt.get("epoch")}


# A run folder's name must be unique, or two runs started in the same second share one last.ckpt: the
# second of `now`, then this process's id and 4 random hex digits (from the OS, not the seeded RNGs). Drawn
# per process id, not at import: processes forked from one that imported this module would share it.
_RUN_TAGS: dict[int, str] = {}


def run_tag() -> str:
    """This process's tag, the same on every call."""
    pid = os.getpid()
    if pid not in _RUN_TAGS:
        _RUN_TAGS[pid] = f"{pid}-{os.urandom(2).hex()}"
    return _RUN_TAGS[pid]


def register_run_tag_resolver() -> None:
    """`${gru_mm_run_tag:}` in conf/ (hydra.run.dir): fixed for the life of the process."""
    if not OmegaConf.has_resolver("gru_mm_run_tag"):
        OmegaConf.register_new_resolver("gru_mm_run_tag", run_tag)


# importing an entry point (train, eval, predict) registers it before Hydra composes
register_run_tag_resolver()
