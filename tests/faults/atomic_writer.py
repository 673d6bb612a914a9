"""Run by test_atomic_checkpoints.py as `python -m atomic_writer PATH`: rewrites a 16 MB checkpoint at PATH
with gru_mm's atomic_save until it is killed; prints "writing" first."""

import sys

import torch

from gru_mm.checkpoints import atomic_save

if __name__ == "__main__":
    state = {"weights": torch.randn(4_000_000), "n": 0}
    print("writing", flush=True)
    while True:
        state["n"] += 1
        atomic_save(state, sys.argv[1])
