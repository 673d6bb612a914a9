"""Frames only, in a plain PyTorch loop, with gru-mm-train's settings switched on one at a time (issue 11).

Why did `gru-mm-train experiment=av_manifest model.modalities=[frames]` learn slower than a plain loop with
the same encoder? Each variant below trains frame_resnet -> GRU 64 -> head on a manifest's frames
(gru_mm.bench.baselines.frames_plain_loop) and prints the test accuracy after each epoch, per seed, then
the mean of the last epoch's over seeds.

    .venv/bin/python scripts/frames_plain_loop.py MANIFEST --work /tmp/frames_loop [--epochs 8]
        [--seeds 0 1 2] [--variants plain "all of gru-mm-train's" ...]

MANIFEST: e.g. `python -m gru_mm.data.sources.realistic OUT` (its manifest.csv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gru_mm.bench import baselines

PIPELINE = {"head": "mlp", "unimodal_weight": 0.5, "batch_size": 16, "clip": 1.0}
VARIANTS = {
    "plain": {},
    "+ MLP head": {"head": "mlp"},
    "+ unimodal head 0.5": {"unimodal_weight": 0.5},
    "+ batch 16": {"batch_size": 16},
    "+ clip 1.0": {"clip": 1.0},
    "all of gru-mm-train's": PIPELINE,
    "all + lr 1e-3": {**PIPELINE, "lr": 1e-3},
    "all + warmup 1 epoch": {**PIPELINE, "warmup_epochs": 1.0},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="folder for a frames copy, its cache")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # comparable timings on a shared machine
    splits = baselines.frame_splits(args.manifest, args.work)
    means = {}
    for name in args.variants:
        last = []
        for seed in args.seeds:
            start = time.perf_counter()
            record = baselines.frames_plain_loop(splits, epochs=args.epochs, seed=seed, **VARIANTS[name])
            last.append(record["test_acc"][-1])
            line = {"variant": name, "seed": seed, **record, "seconds": round(time.perf_counter() - start)}
            print(json.dumps(line), flush=True)
        means[name] = sum(last) / len(last)
    print("| variant | settings | test acc after the last epoch, mean over seeds |\n|---|---|---|")
    for name, mean in means.items():
        print(f"| {name} | {VARIANTS[name] or 'linear head, batch 32, no clipping'} | {mean:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
