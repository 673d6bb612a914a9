"""Peak RSS of one-epoch training runs against the data set's size, for data.storage=store and memory
(issue 12: the store's growth from 750 to 3,000 samples must stay within 150 MB).

Generates real-size media once (audio: 1-3 s mono wav at 16 kHz; frames: 2-8 RGB 64x64 png per
sample), manifests of the first 750 and of all 3,000 rows, then per (storage, size), each under
`/usr/bin/time -v`: `decode`, the first run's decoding (`gru-mm-validate-data`, which decodes into the
store or the .npz cache), and `train`, a one-epoch `gru-mm-train` run on what was decoded. Prints one
JSON line per run and a summary; `--out` writes them as a JSON list. tests/data/test_store_rss.py runs
it and holds the store's training growth to the issue's 150 MB. `ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024`
in the environment measures training as it was before gru-mm-train turned oneDNN's cache off
(gru_mm/nn/onednn_cache.py).

    .venv/bin/python scripts/store_rss.py [--sizes 750 3000] [--storages store memory] [--out FILE]
        [--root DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN = [
    "data=manifest",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "model.gru.hidden_size=16",
    "model.head.hidden=16",
    # full batches at both sizes (a 750-sample set's 75-sample validation split would otherwise make
    # smaller evaluation batches, and less activation memory, than a 3,000-sample set's 128)
    "data.batch_size=32",
    "data.eval_batch_size=32",
    "+model/encoder@model.encoders.frames=frame_cnn_rgb",
    # a small frame CNN and no test stage: the data path is measured, and a 2-core machine trains an
    # epoch of 2,400 samples in minutes rather than hours
    "model.encoders.frames.channels=[4,8]",
    "model.encoders.frames.out_features=16",
    "test=false",
]


def write_media(root: Path, n: int) -> list[dict]:
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        c = i % 4
        seconds = rng.uniform(1, 3)
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (300 + 150 * c) * t) + 0.05 * rng.normal(size=t.size)
        audio = root / "audio" / f"{i}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(audio, wave.astype(np.float32), 16000)
        folder = root / "frames" / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(int(rng.integers(2, 9))):
            pixels = np.clip(rng.normal(64 * c, 40, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{k:03d}.png")
        rows.append({"id": f"s{i:05d}", "label": f"c{c}", "audio": f"audio/{i}.wav", "frames": f"frames/{i}"})
    return rows


def write_manifest(path: Path, rows: list[dict]) -> Path:
    lines = ["id,label,audio,frames"] + [f"{r['id']},{r['label']},{r['audio']},{r['frames']}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(run: str, manifest: Path, storage: str, project: Path) -> dict:
    program = ["gru-mm-train", *TRAIN] if run == "train" else ["gru-mm-validate-data", *TRAIN[:1]]
    command = [
        "/usr/bin/time",
        "-v",
        str(Path(sys.executable).parent / program[0]),
        *program[1:],
        f"data.path={manifest}",
        f"data.storage={storage}",
        f"paths.root={project}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return {"peak_rss_mb": round(peak / 1024), "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[750, 3000])
    parser.add_argument("--storages", nargs="+", default=["store", "memory"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--root", type=Path, help="work in this folder (default: a temporary one, removed)")
    args = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("/usr/bin/time is missing: apt-get install time")
    records = []
    with contextlib.nullcontext(args.root) if args.root else tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "media"
        rows = write_media(root, max(args.sizes))
        for storage in args.storages:
            for n in args.sizes:
                manifest = write_manifest(root / f"manifest-{n}.csv", rows[:n])
                project = Path(tmp) / f"run-{storage}-{n}"
                for run in ("decode", "train"):
                    record = {
                        "storage": storage,
                        "samples": n,
                        "run": run,
                        **measure(run, manifest, storage, project),
                    }
                    print(json.dumps(record), flush=True)
                    records.append(record)
                shutil.rmtree(project)  # its decoded data too: the next size starts from nothing
    for storage in args.storages:
        for run in ("decode", "train"):
            peaks = {
                r["samples"]: r["peak_rss_mb"] for r in records if (r["storage"], r["run"]) == (storage, run)
            }
            sizes = sorted(peaks)
            print(
                f"{storage:<7} {run:<6} peak RSS {', '.join(f'{n}: {peaks[n]} MB' for n in sizes)}; "
                f"growth {peaks[sizes[-1]] - peaks[sizes[0]]} MB"
            )
    if args.out:
        args.out.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
