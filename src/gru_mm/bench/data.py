"""`gru-mm-bench data`: the data path with every decoded sample in RAM (`data.storage=memory`) against
the sharded store on disk (`data.storage=store`), on generated manifests of real-size recordings.

Each sample: a 16 kHz wav of 1-3 s (log-mel frames when decoded) and 2-8 png frames of 64x64 RGB. For each
size and storage, two processes, each from a fresh interpreter:

- `build`: an empty cache; validating the data decodes every file into the cache (or the store).
- `read`:  a second run on that cache: open the data (decoding nothing), then passes over the training
  split, each in a new random order (no length bucketing), through the datamodule's DataLoader, collate
  included; the best pass counts.

Reads run with one torch thread by default (as in a DataLoader worker): on a small machine shared with other
jobs, torch's intra-op threads contending with them made reads 5-10x slower and the numbers noise.

Peak RSS is each process's own (`os.wait4`: the largest resident set among the process and the
processes it waited for, as `/usr/bin/time -v` reports it), so one case never inherits another's.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"quick": (60,), "full": (1000, 10000)}
STORAGES = ("memory", "store")
SAMPLE_RATE = 16000
FRAME_SIZE = 64
BATCH_SIZE = 32
# what conf/data/source/manifest.yaml sets (the child builds the source directly, without Hydra)
SETTINGS = {
    "audio": {"sample_rate": SAMPLE_RATE, "n_mels": 40, "n_fft": 400, "hop_length": 160},
    "frames": {"height": FRAME_SIZE, "width": FRAME_SIZE, "channels": 3},
}


def write_corpus(root: Path, n: int, seed: int = 0) -> Path:
    """n samples (80/10/10 train/val/test) of real files under root, and their manifest.csv; reused when
    root already holds a complete one of that size."""
    import soundfile
    from PIL import Image

    manifest = root / "manifest.csv"
    done = root / "complete"
    if done.is_file() and done.read_text() == str(n):
        return manifest
    shutil.rmtree(root, ignore_errors=True)
    (root / "audio").mkdir(parents=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        label = int(rng.integers(10))
        t = np.arange(int(SAMPLE_RATE * rng.uniform(1.0, 3.0))) / SAMPLE_RATE
        wave = 0.3 * np.sin(2 * np.pi * (200 + 40 * label) * t) + 0.05 * rng.normal(size=t.size)
        soundfile.write(root / "audio" / f"{i}.wav", wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        frames = root / "frames" / str(i)
        frames.mkdir(parents=True)
        base = rng.integers(0, 256, (FRAME_SIZE, FRAME_SIZE, 3))
        for k in range(int(rng.integers(2, 9))):
            noise = rng.integers(-20, 21, base.shape)
            Image.fromarray(np.clip(base + noise + 8 * k, 0, 255).astype(np.uint8)).save(
                frames / f"{k:02d}.png"
            )
        split = "train" if i % 10 < 8 else ("val" if i % 10 == 8 else "test")
        rows.append({"id": f"s{i:05d}", "label": label, "split": split, "audio": f"audio/{i}.wav"})
        rows[-1]["frames"] = f"frames/{i}"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done.write_text(str(n))
    return manifest


CHILD = r"""
import inspect, json, resource, sys, time
from gru_mm.bench.data import BATCH_SIZE, SETTINGS
from gru_mm.data.datamodule import SequenceDataModule
from gru_mm.data.sources.manifest import Manifest

import torch

manifest, cache, storage, phase, workers, threads, passes = sys.argv[1:8]
if phase == "read":  # building decodes as a training run does, with torch's own threads
    torch.set_num_threads(int(threads))
extra = {"storage": storage} if "storage" in inspect.signature(Manifest).parameters else {}
start = time.perf_counter()
source = Manifest(manifest, cache_dir=cache, **SETTINGS, **extra)
dm_extra = {"storage": storage} if "storage" in inspect.signature(SequenceDataModule).parameters else {}
dm = SequenceDataModule(
    source, batch_size=BATCH_SIZE, num_workers=int(workers), bucket=False, seed=0, **dm_extra
)
dm.validate()
out = {"open_s": time.perf_counter() - start, "decoded": source.cache.misses, "from_cache": source.cache.hits,
       "samples": sum(len(source.split(s)) for s in ("train", "val", "test"))}
if phase == "read":
    loader = dm.train_dataloader()
    rates = []
    for epoch in range(int(passes)):
        loader.batch_sampler.set_epoch(epoch)  # a new random order each pass
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch.ids)
        rates.append(n / (time.perf_counter() - start))
    out |= {"read_samples": n, "rates": rates}
print(json.dumps(out))
"""


def store_available() -> str | None:
    """None when `data.storage=store` exists, else why the store column is skipped."""
    from gru_mm.data.sources.manifest import Manifest

    if "storage" not in inspect.signature(Manifest).parameters:
        return "the manifest source has no `storage` setting yet (gru_mm.data.store not built)"
    return None


def run_case(
    manifest: Path, cache: Path, storage: str, phase: str, workers: int, threads: int, passes: int
) -> dict:
    """One process; its output and peak RSS (MB)."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                *map(str, (manifest, cache, storage, phase, workers, threads, passes)),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        out = proc.stdout.read()
        # wait4, not Popen.wait: it also returns the resources the child used, peak RSS among them
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(
                f"gru-mm-bench data: the {storage} {phase} process failed:\n{err.read()[-3000:]}"
            )
    record = json.loads(out.strip().splitlines()[-1])
    record["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports kilobytes
    return record


def measure(manifest: Path, work: Path, storage: str, workers: int, threads: int, passes: int) -> dict:
    cache = work / f"cache-{storage}"
    shutil.rmtree(cache, ignore_errors=True)
    build = run_case(manifest, cache, storage, "build", workers, threads, passes)
    read = run_case(manifest, cache, storage, "read", workers, threads, passes)
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return {
        "storage": storage,
        "samples": build["samples"],
        "build_s": round(build["open_s"], 2),
        "build_decoded": build["decoded"],
        "build_peak_rss_mb": build["peak_rss_mb"],
        "cache_mb": round(size / 2**20, 1),
        "open_s": round(read["open_s"], 2),
        "open_decoded": read["decoded"],
        "read_samples": read["read_samples"],
        # the best pass: on a shared machine, the one least slowed by other jobs
        "read_samples_per_s": round(max(read["rates"]), 1),
        "read_samples_per_s_passes": [round(r, 1) for r in read["rates"]],
        "read_peak_rss_mb": read["peak_rss_mb"],
        "workers": workers,
        "torch_threads": threads,
    }


COLUMNS = (
    ("samples", "samples"),
    ("storage", "storage"),
    ("build_s", "build s"),
    ("build_peak_rss_mb", "build peak RSS MB"),
    ("cache_mb", "on disk MB"),
    ("open_s", "2nd run open s"),
    ("read_samples_per_s", "random read samples/s (best pass)"),
    ("read_peak_rss_mb", "read peak RSS MB"),
)


def table(records: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |" for r in records]
    return "\n".join(lines)


def run(
    quick: bool,
    out: Path | None,
    sizes: tuple[int, ...] | None = None,
    storages: tuple[str, ...] = STORAGES,
    workers: int = 0,
    data_dir: Path | None = None,
    keep: bool = False,
    threads: int = 1,
    passes: int = 3,
) -> list[dict]:
    sizes = sizes or SIZES["quick" if quick else "full"]
    skip = store_available() if "store" in storages else None
    if skip:
        print(f"gru-mm-bench data: skipping data.storage=store: {skip}")
        storages = tuple(s for s in storages if s != "store")
    if data_dir:
        data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gru-mm-bench-data-", dir=data_dir))
    records = []
    try:
        for n in sizes:
            start = time.perf_counter()
            manifest = write_corpus((data_dir or work) / f"corpus-{n}", n)
            print(f"{n} samples generated in {time.perf_counter() - start:.1f} s: {manifest}", flush=True)
            for storage in storages:
                record = measure(manifest, work, storage, workers, threads, passes)
                records.append(record)
                print(json.dumps(record), flush=True)
                if out:  # kept after every case: a long run that is stopped keeps what it measured
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(records, indent=1) + "\n")
                shutil.rmtree(work / f"cache-{storage}", ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(records))
    return records
