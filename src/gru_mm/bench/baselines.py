"""Each unimodal encoder of gru-mm against logistic regression on the same inputs (issue 11).

The logistic regressions read the manifest's files themselves, with the features such baselines use:
audio, MFCC or log-mel mean and std over time; text, a bag of words; series, summary statistics per
channel or the series resampled to a fixed length and flattened. Their regularisation C is picked on the
validation split. gru-mm trains through `gru-mm-train` (the command a user runs) with `logger=csv`, and
its test accuracy is read from the run's metrics.csv.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gru_mm.bench.baseline_data import GENERATORS, SAMPLE_RATE

C_GRID = (0.01, 0.1, 1.0, 10.0)
# the encoder each modality's gru-mm model uses (conf/model/encoder/) and its training settings
ENCODERS = {"audio": "audio_conv", "text": "text_embedding", "series": "series_conv"}
TRAIN_ARGS = ["model.modality_dropout=0.0", "data.batch_size=32"]  # one modality: nothing to drop


def read_rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def _audio_features(paths: list[Path], kind: str) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio

    mel_args = {"n_fft": 400, "hop_length": 160, "n_mels": 40}
    if kind == "mfcc":
        transform = torchaudio.transforms.MFCC(SAMPLE_RATE, n_mfcc=20, melkwargs=mel_args)
    else:
        mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, **mel_args)
        transform = lambda x: torch.log(mel(x) + 1e-6)  # noqa: E731 (what the audio kind computes)
    rows = []
    for path in paths:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
        feats = transform(torch.from_numpy(wave.mean(axis=1)))  # [n, frames]
        rows.append(torch.cat([feats.mean(dim=1), feats.std(dim=1)]).numpy())
    return np.stack(rows)


def _series_features(paths: list[Path], kind: str, steps: int = 32) -> np.ndarray:
    rows = []
    for path in paths:
        x = np.load(path)
        if kind == "flat":  # resampled to `steps` steps, flattened
            grid = np.linspace(0, len(x) - 1, steps)
            rows.append(np.concatenate([np.interp(grid, np.arange(len(x)), c) for c in x.T]))
            continue
        d = x - x.mean(0)
        var = (d**2).mean(0) + 1e-9
        lag = [(d[k:] * d[:-k]).mean(0) / var for k in (1, 2, 4, 8)]
        slope = np.polyfit(np.arange(len(x)), x, 1)[0]
        rows.append(np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), slope, *lag]))
    return np.stack(rows)


def features(modality: str, kind: str, manifest: Path) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """({split: X}, {split: labels}) for one modality's baseline features."""
    rows = read_rows(manifest)
    split_rows = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    labels = {s: [r["label"] for r in rs] for s, rs in split_rows.items()}
    if modality == "text":
        from sklearn.feature_extraction.text import CountVectorizer

        bow = CountVectorizer(token_pattern=r"\S+").fit([r["text"] for r in split_rows["train"]])
        return {s: bow.transform([r["text"] for r in rs]) for s, rs in split_rows.items()}, labels
    read = _audio_features if modality == "audio" else _series_features
    return {
        s: read([manifest.parent / r[modality] for r in rs], kind) for s, rs in split_rows.items()
    }, labels


def logistic_regression(x: dict, y: dict, scale: bool = True) -> dict:
    """Test accuracy of a logistic regression whose C is picked on the validation split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in C_GRID:
        steps = [StandardScaler()] if scale else []
        model = make_pipeline(*steps, LogisticRegression(C=c, max_iter=3000)).fit(x["train"], y["train"])
        val = model.score(x["val"], y["val"])
        if best is None or val > best[0]:
            best = (val, c, model)
    val, c, model = best
    return {"val_acc": float(val), "test_acc": float(model.score(x["test"], y["test"])), "C": c}


BASELINES: dict[str, list[tuple[str, bool]]] = {  # modality -> (feature kind, standardise)
    "audio": [("mfcc", True), ("logmel", True)],
    "text": [("bow", False)],
    "series": [("summary", True), ("flat", True)],
}


def _cli(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def train_gru_mm(
    modality: str,
    manifest: Path,
    out: Path,
    extra: list[str] | None = None,
    epochs: int = 20,
    timeout: float = 3600,
) -> dict:
    """Train gru-mm on one modality through the console script; its test accuracy and time."""
    run_dir = out / "run"
    args = [
        _cli("gru-mm-train"),
        "data=manifest",
        f"data.path={manifest}",
        f"paths.root={out}",
        f"hydra.run.dir={run_dir}",
        "logger=csv",
        "log_model=false",
        "trainer.enable_progress_bar=false",
        # the default model names an audio encoder already (it is replaced), not a text or series one
        f"{'' if modality == 'audio' else '+'}model/encoder@model.encoders.{modality}={ENCODERS[modality]}",
        f"trainer.max_epochs={epochs}",
        *TRAIN_ARGS,
        *(extra or []),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"gru-mm-train on {manifest} failed:\n{result.stderr[-3000:]}")
    metrics = next(run_dir.rglob("metrics.csv"))
    tested = [r for r in read_rows(metrics) if r.get("test/acc")]
    validated = [float(r["val/acc"]) for r in read_rows(metrics) if r.get("val/acc")]
    return {
        "test_acc": float(tested[-1]["test/acc"]),
        "best_val_acc": max(validated),
        "seconds": round(seconds, 1),
        "args": args[1:],
    }


def compare(
    modality: str,
    root: Path,
    generate: Callable[..., Path] | None = None,
    gru_extra: list[str] | None = None,
    epochs: int = 20,
) -> dict:
    """Generate one modality's data under root (unless there), then the baselines' and gru-mm's test
    accuracies."""
    manifest = root / "data" / "manifest.csv"
    if not manifest.exists():
        manifest = (generate or GENERATORS[modality])(root / "data")
    result: dict = {"modality": modality, "classes": len({r["label"] for r in read_rows(manifest)})}
    for kind, scale in BASELINES[modality]:
        x, y = features(modality, kind, manifest)
        result[f"logreg_{kind}"] = logistic_regression(x, y, scale)
    result["gru_mm"] = train_gru_mm(modality, manifest, root / "gru_mm", gru_extra, epochs)
    best = max((v["test_acc"], k) for k, v in result.items() if k.startswith("logreg_"))
    result["best_logreg"] = {"name": best[1], "test_acc": best[0]}
    result["margin"] = round(result["gru_mm"]["test_acc"] - best[0], 4)
    return result


# --- frames: a plain PyTorch loop whose settings can be made gru-mm-train's one at a time (issue 11) ---
def frame_splits(manifest: Path, work: Path, size: int = 32) -> dict[str, tuple[list, Any]]:
    """{split: (frames [T, C, size, size] per sample, targets)}: the manifest's frames column decoded as
    `data=manifest` decodes it (cached under `work`)."""
    import torch

    from gru_mm.data.sources.manifest import Manifest

    source = Manifest(
        manifest,
        cache_dir=work / "cache",
        storage="memory",
        frames={"height": size, "width": size, "channels": 3},
    )
    return {
        split: (
            [torch.as_tensor(s.modalities["frames"]) for s in samples],
            torch.tensor([int(s.target) for s in samples]),
        )
        for split, samples in source.load().items()
        if split in ("train", "val", "test")
    }


def padded_batches(xs: list, ys, size: int, order=None):
    """(Seq, targets) batches of `size` samples from per-sample tensors `xs` [steps, ...] and targets `ys`,
    zero-padded after each sample's steps; shuffled with the `random.Random` `order` when given."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    from gru_mm.data.batch import Seq

    idx = list(range(len(ys)))
    if order is not None:
        order.shuffle(idx)
    for i in range(0, len(idx), size):
        b = idx[i : i + size]
        lengths = torch.tensor([len(xs[j]) for j in b])
        yield Seq(pad_sequence([xs[j] for j in b], batch_first=True), lengths, lengths > 0), ys[b]


def frames_plain_loop(
    splits: dict,
    epochs: int = 8,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    warmup_epochs: float = 0.0,
    head: str = "linear",
    unimodal_weight: float = 0.0,
    clip: float = 0.0,
    seed: int = 0,
) -> dict:
    """Frames only: frame_resnet per real frame -> gru_mm GRU (64) -> head, in a plain loop (AdamW,
    `WarmupCosineLR` per step to 1e-5, random batches, no Lightning, no store, no bucketing). Each of
    gru-mm-train's settings can be switched on alone: `head` "mlp" (the default model's MLPHead) instead
    of a linear layer, a unimodal head's loss `unimodal_weight` (experiment=av_manifest: 0.5), its
    `batch_size` (av_manifest: 16), gradient clipping `clip` (trainer: 1.0), `warmup_epochs`.
    Returns the test and validation accuracy and the mean training loss after each epoch."""
    import functools
    import random

    import torch
    from torch import nn

    from gru_mm.models.multimodal import MultimodalGRU
    from gru_mm.models.schedules import WarmupCosineLR
    from gru_mm.nn import GRU
    from gru_mm.nn.encoders import FrameResNetEncoder
    from gru_mm.nn.fusion import LateFusion
    from gru_mm.nn.heads import MLPHead

    torch.manual_seed(seed)
    order = random.Random(seed)
    frames, targets = splits["train"]
    classes = int(max(int(y.max()) for _, y in splits.values())) + 1
    heads = {"mlp": MLPHead, "linear": lambda in_features, out_features: nn.Linear(in_features, out_features)}
    channels, size = frames[0].shape[1], max(frames[0].shape[2:])
    net = MultimodalGRU(
        {"frames": FrameResNetEncoder(channels, size)},
        functools.partial(GRU, hidden_size=64),
        LateFusion,
        heads[head],
        classes,
        unimodal_heads={"weight": unimodal_weight},
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = -(-len(targets) // batch_size)
    schedule = WarmupCosineLR(optimizer, steps, epochs, warmup_epochs, eta_min=1e-5)
    loss_fn = nn.CrossEntropyLoss()

    def batches(split: str, size: int, shuffle: bool):
        return padded_batches(*splits[split], size, order if shuffle else None)

    @torch.no_grad()
    def accuracy(split: str) -> float:
        net.eval()
        hits = sum(int((net({"frames": s}).argmax(1) == y).sum()) for s, y in batches(split, 128, False))
        return hits / len(splits[split][1])

    record: dict[str, list] = {"test_acc": [], "val_acc": [], "train_loss": []}
    for _ in range(epochs):
        net.train()
        total = 0.0
        for seq, y in batches("train", batch_size, True):
            parts = net.forward_parts({"frames": seq})
            loss = loss_fn(parts.logits, y)
            own = loss_fn(parts.unimodal["frames"], y)  # weight 0: a probe on detached states
            objective = loss + (unimodal_weight * own if unimodal_weight > 0 else own)
            optimizer.zero_grad()
            objective.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) / steps
        record["train_loss"].append(round(total, 3))
        record["val_acc"].append(round(accuracy("val"), 3))
        record["test_acc"].append(round(accuracy("test"), 3))
    return record
