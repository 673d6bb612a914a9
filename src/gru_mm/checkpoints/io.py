"""Reading checkpoints without running code from them, and writing them so that a kill never leaves
half a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from gru_mm.checkpoints.errors import CheckpointError


def load(path: str | Path) -> dict[str, Any]:
    """The whole checkpoint, read with `weights_only=True`: tensors and plain containers only, so a
    crafted pickle inside is refused instead of run. Any failure is a CheckpointError naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path}: not a readable checkpoint (it holds a {type(ckpt).__name__}, not a dict)"
        )
    return ckpt


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename over `path`, fsync the folder:
    a kill at any moment leaves either the old file or the new one, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask's mode, as a plain write gets
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe against kills and untrusted files.

    - Every write is `atomic_save` (local folders only).
    - A removal waits until the next write is on disk. ModelCheckpoint writes a new best checkpoint, removes
      the old best, then writes last.ckpt, whose state names the best: removed at once, a kill between the
      two would leave a last.ckpt naming a best checkpoint that is gone. Deferred, the old best goes only
      once the new last.ckpt names the new one (or when the trainer is torn down).
    - Every read is `load` (weights_only, whatever the caller asked for).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending_removals: list[str] = []

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_save(checkpoint, path)
        # a file written again after its removal was asked for is the new one: keep it
        self._pending_removals = [p for p in self._pending_removals if Path(p) != Path(path)]
        self._remove_pending()

    def remove_checkpoint(self, path: Any) -> None:
        self._pending_removals.append(str(path))

    def _remove_pending(self) -> None:
        pending, self._pending_removals = self._pending_removals, []
        for path in pending:
            super().remove_checkpoint(path)

    def teardown(self) -> None:
        self._remove_pending()
        super().teardown()

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load(path)
