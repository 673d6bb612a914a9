"""Small real files for the bring-your-own-data tests: wav/flac, png folders, npy/csv series, manifests,
pickles."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

WORDS = ["red", "green", "blue", "loud", "quiet", "fast", "slow", "dog", "cat", "bird"]


def write_wav(
    path: Path,
    seconds: float = 0.3,
    rate: int = 8000,
    channels: int = 1,
    freq: float = 440.0,
    fmt: str | None = None,
) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, format=fmt)
    return path


def write_png(path: Path, size: int = 8, value: float | None = None, rgb: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if rgb else (size, size)
    pixels = rng.random(shape) if value is None else np.full(shape, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
    return path


def write_series_csv(
    path: Path, steps: int, features: int = 3, seed: int = 0, with_time: bool = True
) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow((["time"] if with_time else []) + [f"f{i}" for i in range(features)])
        t = np.cumsum(rng.uniform(0.05, 0.5, steps))  # irregular sampling
        for i in range(steps):
            w.writerow(
                ([f"{t[i]:.3f}"] if with_time else []) + [f"{v:.4f}" for v in rng.normal(size=features)]
            )
    return path


def make_corpus(
    root: Path,
    n: int = 24,
    task: str = "multiclass",
    fmt: str = "csv",
    splits: bool = True,
    modalities: tuple[str, ...] = ("audio", "frames", "text", "series"),
    targets: int = 1,
) -> tuple[Path, list[dict]]:
    """n samples with every modality as real files under root; returns (manifest path, rows).

    Labels follow the task: 3 class names, two names, `;`-joined names, or a float (`targets` > 1:
    that many, `;`-joined in a CSV, a list otherwise). Media vary in
    length, rate and channels (mono 8 kHz wav, stereo 11025 Hz flac, RGB and gray png frames).
    """
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        c = i % 3
        row: dict = {"id": f"s{i:03d}"}
        if task == "multiclass":
            row["label"] = ["low", "mid", "high"][c]
        elif task == "binary":
            row["label"] = ["no", "yes"][i % 2]
        elif task == "multilabel":
            row["label"] = ";".join(["a", "b", "c"][: 1 + c]) if fmt == "csv" else ["a", "b", "c"][: 1 + c]
        elif targets == 1:
            row["label"] = f"{(c - 1) * 1.5 + rng.normal(0, 0.1):.3f}"
        else:  # target k: the class scaled by k + 1, plus noise
            values = [round((c - 1) * 1.5 * (k + 1) + rng.normal(0, 0.1), 3) for k in range(targets)]
            row["label"] = ";".join(map(str, values)) if fmt == "csv" else values
        if splits:
            row["split"] = "train" if i < n * 2 // 3 else ("val" if i < n * 5 // 6 else "test")
        if "audio" in modalities:
            if i % 2:
                write_wav(
                    root / "audio" / f"{i}.flac", 0.2 + 0.05 * c, rate=11025, channels=2, freq=300 + 200 * c
                )
                row["audio"] = f"audio/{i}.flac"
            else:
                write_wav(root / "audio" / f"{i}.wav", 0.2 + 0.05 * c, freq=300 + 200 * c)
                row["audio"] = f"audio/{i}.wav"
        if "frames" in modalities:
            for t in range(2 + i % 3):
                write_png(
                    root / "frames" / f"{i}" / f"{t:03d}.png", value=0.3 * c, rgb=bool(i % 2), seed=i * 10 + t
                )
            row["frames"] = f"frames/{i}"
        if "text" in modalities:
            words = rng.choice(WORDS, size=2 + i % 4).tolist() + [["low", "mid", "high"][c]]
            row["text"] = " ".join(words).capitalize() + "."
        if "series" in modalities:
            if i % 2:
                write_series_csv(root / "series" / f"{i}.csv", 4 + i % 5, seed=i)
                row["series"] = f"series/{i}.csv"
            else:
                (root / "series").mkdir(parents=True, exist_ok=True)
                np.save(
                    root / "series" / f"{i}.npy", rng.normal(c, 1, size=(3 + i % 4, 3)).astype(np.float32)
                )
                row["series"] = f"series/{i}.npy"
        rows.append(row)
    return write_manifest(root / f"manifest.{fmt}", rows), rows


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, columns)
            w.writeheader()
            w.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    return path


def write_mosi_pickle(
    path: Path, n: dict[str, int] | None = None, aligned: bool = False, seed: int = 0
) -> Path:
    """The MultiBench/MMSA layout: {train, valid, test} x {text, audio, vision, *_lengths,
    regression_labels, id}."""
    n = n or {"train": 24, "valid": 8, "test": 8}
    rng = np.random.default_rng(seed)
    data = {}
    for split, count in n.items():
        label = rng.uniform(-3, 3, count).astype(np.float32)
        part = {
            "id": np.array([f"{split}_{i}" for i in range(count)]),
            "regression_labels": label,
            "raw_text": ["..."] * count,
        }
        for m, (steps, dim) in {"text": (12, 6), "audio": (20, 5), "vision": (20, 4)}.items():
            t = 12 if aligned else steps
            array = np.zeros((count, t, dim), dtype=np.float32)
            lengths = rng.integers(2, t + 1, count)
            for i in range(count):
                array[i, : lengths[i]] = rng.normal(label[i] / 3, 1, (lengths[i], dim))
            part[m] = array
            if not aligned:
                part[f"{m}_lengths"] = lengths
        data[split] = part
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


def write_npz(path: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Generic npz: `<split>/series` concatenated + `<split>/series_lengths`, `<split>/labels` (0/1), ids."""
    counts = counts or {"train": 24, "val": 8, "test": 8}
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in counts.items():
        labels = rng.integers(0, 2, count)
        lengths = rng.integers(1, 9, count)
        arrays[f"{split}/series"] = np.concatenate(
            [rng.normal(labels[i], 1, (lengths[i], 2)) for i in range(count)]
        ).astype(np.float32)
        arrays[f"{split}/series_lengths"] = lengths
        arrays[f"{split}/labels"] = labels
        arrays[f"{split}/ids"] = np.array([f"{split}{i}" for i in range(count)])
    np.savez(path, **arrays)
    return path
