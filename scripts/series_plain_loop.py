"""series_conv on the series baseline data (gru_mm.bench.baseline_data.signals) in a plain PyTorch loop, to
find where a series model overfits (issue 11; docs/benchmarks.md, "Series with few training sources").

The loop is gru-mm-train's default run without Lightning: the series standardised with the training split's
mean and std, encoder -> GRU (hidden 64) -> late fusion -> MLPHead, AdamW (lr 3e-3, weight decay 0.01),
cosine schedule per epoch to 1e-5, batches of 32, gradient norm clipped at 1.0, and the test accuracy of
the epoch with the best validation accuracy. `--reader mean` replaces the GRU by a masked mean of the
encoder's outputs over real steps (what the filters alone can do); encoder settings go as KEY=VALUE.

    .venv/bin/python scripts/series_plain_loop.py --out DIR --seed 2 --train-groups 12 --inits 3 \
        [--reader gru|mean] [--hidden 64] [running_mean=true step_path=false ...]

Prints one JSON line per initialisation: best validation accuracy, its epoch, test accuracy there, and the
final training accuracy.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from gru_mm.bench.baseline_data import signals
from gru_mm.bench.baselines import padded_batches
from gru_mm.data.batch import Seq
from gru_mm.models.multimodal import MultimodalGRU
from gru_mm.nn import GRU
from gru_mm.nn.encoders import SeriesConvEncoder, _step_mask
from gru_mm.nn.fusion import LateFusion
from gru_mm.nn.heads import MLPHead


def splits(root: Path, seed: int, train_groups: int) -> dict[str, tuple[list[torch.Tensor], torch.Tensor]]:
    """{split: (standardised [T, F] series, targets)}, generated under root unless there."""
    if not (root / "manifest.csv").exists():
        signals(root, sources=(train_groups, 5, 10), seed=seed)
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["label"] for r in rows})
    raw = {
        s: (
            [np.load(root / r["series"]) for r in rows if r["split"] == s],
            torch.tensor([classes.index(r["label"]) for r in rows if r["split"] == s]),
        )
        for s in ("train", "val", "test")
    }
    steps = np.concatenate(raw["train"][0])
    mean, std = steps.mean(0), steps.std(0)
    return {s: ([torch.from_numpy((x - mean) / std).float() for x in xs], y) for s, (xs, y) in raw.items()}


class MeanReader(nn.Module):
    """encoder -> mean of its outputs over real steps -> MLPHead (no GRU)."""

    def __init__(self, encoder: nn.Module, classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = MLPHead(encoder.out_features, classes)

    def forward(self, batch: dict[str, Seq]) -> torch.Tensor:
        seq = batch["series"]
        h, lengths = self.encoder(seq.data, seq.lengths)
        mask = _step_mask(lengths, h.shape[1], h.device)
        return self.head((h * mask).sum(1) / mask.sum(1).clamp(min=1.0))


def fit(data: dict, encoder: dict, reader: str, hidden: int, seed: int, epochs: int = 20) -> dict:
    torch.manual_seed(seed)
    order = random.Random(seed)
    features, classes = data["train"][0][0].shape[1], 4
    enc = SeriesConvEncoder(features, **encoder)
    if reader == "mean":
        net: nn.Module = MeanReader(enc, classes)
    else:
        gru = functools.partial(GRU, hidden_size=hidden)
        net = MultimodalGRU({"series": enc}, gru, LateFusion, MLPHead, classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, 1e-5)
    loss_fn = nn.CrossEntropyLoss()

    def batches(split: str, size: int, shuffle: bool):
        return padded_batches(*data[split], size, order if shuffle else None)

    @torch.no_grad()
    def accuracy(split: str) -> float:
        net.eval()
        hits = sum(int((net({"series": s}).argmax(1) == y).sum()) for s, y in batches(split, 256, False))
        return round(hits / len(data[split][1]), 3)

    best = {"val_acc": -1.0}
    for epoch in range(epochs):
        net.train()
        for seq, y in batches("train", 32, True):
            loss = loss_fn(net({"series": seq}), y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
        schedule.step()
        val = accuracy("val")
        if val > best["val_acc"]:
            best = {"val_acc": val, "epoch": epoch, "test_acc": accuracy("test")}
    return best | {"train_acc": accuracy("train")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the generated data")
    parser.add_argument("--seed", type=int, default=2, help="the data generator's seed")
    parser.add_argument("--train-groups", type=int, default=12, help="training sources")
    parser.add_argument("--inits", type=int, default=3, help="initialisations (seeds 0, 1, ...)")
    parser.add_argument("--reader", choices=("gru", "mean"), default="gru")
    parser.add_argument("--hidden", type=int, default=64, help="GRU hidden size")
    parser.add_argument("encoder", nargs="*", help="SeriesConvEncoder settings, KEY=VALUE (YAML values)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    encoder = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.encoder)}
    data = splits(args.out / f"signals_s{args.seed}_g{args.train_groups}", args.seed, args.train_groups)
    for init in range(args.inits):
        result = fit(data, encoder, args.reader, args.hidden, init)
        print(json.dumps({"init": init, "reader": args.reader, "encoder": encoder} | result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
