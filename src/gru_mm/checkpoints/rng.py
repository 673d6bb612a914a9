"""Random-number states in checkpoints, so that a resumed run draws what the uninterrupted run would have.

What draws random numbers during training: dropout and modality dropout (torch's global generator), the
collate's crop positions (torch's global generator in the main process; inside DataLoader workers, a
generator seeded from (seed, epoch) by `data.sampler.ResumableDataLoader`), and anything a user adds
through Python's `random` or NumPy's global generator. The batch sampler keeps no generator across epochs:
each epoch's order comes from `seed + epoch`, and its position within the epoch is in the loader's own
state (`ResumableDataLoader.state_dict`), which Lightning saves with the fit loop. So the global
generators are the whole state: saved with each checkpoint, restored when training resumes.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def capture() -> dict[str, Any]:
    """The global generators' states, as tensors and plain values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RandomState(pl.Callback):
    """Saves the generators' states with every checkpoint and restores them as soon as a resumed fit reads it.

    Checkpoints are written at the very end of an epoch; what follows in an uninterrupted run is the next
    epoch's loader iterator and then its batches. A resumed
    fit restores the callbacks' states early in `fit`, and from there to its first batch the only draw is
    that same iterator's (the sanity check's validation batches run under Lightning's `isolate_rng`): the two
    runs draw the same numbers. One process: under DDP every rank gets rank 0's states back, so a resumed
    multi-process run is not bit-exact.
    """

    def state_dict(self) -> dict[str, Any]:
        return capture()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore(state_dict)
