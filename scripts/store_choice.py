"""Which on-disk store for decoded samples (issue 12): build time, random-access reads and RSS growth.

Writes N generated samples (log-mel audio [100-300, 40] float32, 2-8 RGB 64x64 uint8 frames, a label)
with Hugging Face `datasets` (Arrow, memory-mapped), `litdata` (Lightning's chunked streaming format),
and gru_mm's shard format (read by `pread`, and the same files read through `np.memmap`), then reads
every sample once in random order. Each case runs in its own process, so the RSS numbers are its own.

    .venv/bin/python scripts/store_choice.py [N]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def samples(n: int, first: int = 0):
    for i in range(first, n):
        rng = np.random.default_rng(i)
        yield {
            "id": f"s{i:05d}",
            "label": int(rng.integers(10)),
            "audio": rng.normal(size=(int(rng.integers(100, 301)), 40)).astype(np.float32),
            "frames": rng.integers(0, 256, size=(int(rng.integers(2, 9)), 3, 64, 64), dtype=np.uint8),
        }


DIRS = {"datasets": "hf", "litdata": "lit", "own": "own", "own-memmap": "own"}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def build(case: str, n: int, root: Path):
    if case == "datasets":
        import datasets

        features = datasets.Features(
            {
                "id": datasets.Value("string"),
                "label": datasets.Value("int64"),
                "audio": datasets.Array2D((None, 40), "float32"),
                "frames": datasets.Array4D((None, 3, 64, 64), "uint8"),
            }
        )
        ds = datasets.Dataset.from_generator(
            samples, gen_kwargs={"n": n}, features=features, cache_dir=str(root / "hf-cache")
        )
        ds.save_to_disk(str(root / "hf"))
    elif case == "litdata":
        import litdata

        litdata.optimize(
            fn=_litdata_item,
            inputs=list(range(n)),
            output_dir=str(root / "lit"),
            chunk_bytes="64MB",
            num_workers=1,
            verbose=False,
            mode="overwrite",
        )
    else:
        from gru_mm.data.store.shard import ShardWriter

        shard_rows = 256
        it = samples(n)
        for start in range(0, n, shard_rows):
            writer = ShardWriter(root / "own" / f"shard-{start // shard_rows:05d}")
            for s in (next(it) for _ in range(min(shard_rows, n - start))):
                writer.add(s["id"], {"audio": s["audio"], "frames": s["frames"]}, {})
            writer.commit()


def _litdata_item(i: int):
    return next(samples(i + 1, first=i))  # litdata calls fn once per input in its worker


def reader(case: str, root: Path):
    """(number of samples, read(i) -> (audio, frames))."""
    if case == "datasets":
        import datasets

        ds = datasets.load_from_disk(str(root / "hf")).with_format("numpy")
        return len(ds), lambda i: (lambda s: (s["audio"], s["frames"]))(ds[i])
    if case == "litdata":
        import litdata

        ds = litdata.StreamingDataset(str(root / "lit"), cache_dir=str(root / "lit-cache"))
        return len(ds), lambda i: (lambda s: (s["audio"], s["frames"]))(ds[i])
    from gru_mm.data.store.shard import ShardReader

    shards = [ShardReader(p) for p in sorted((root / "own").iterdir())]
    where = [(s, j) for s in shards for j in range(s.rows)]
    if case == "own-memmap":
        maps = {}

        def read(i):
            shard, j = where[i]
            out = []
            for column in ("audio", "frames"):
                key = (shard.path, column)
                if key not in maps:
                    maps[key] = np.memmap(shard.path / f"{column}.bin", dtype=np.uint8, mode="r")
                c = shard.columns[column]
                off, shape, dtype = int(c.offset[j]), c.shape_of(j), np.dtype(c.tags[c.tag[j]])
                size = int(np.prod(shape)) * dtype.itemsize
                out.append(np.array(maps[key][off : off + size].view(dtype).reshape(shape)))
            return out

        return len(where), read
    return len(where), lambda i: (lambda s, j: (s.read("audio", j), s.read("frames", j)))(*where[i])


def child(case: str, n: int, root: Path) -> dict:
    start = time.perf_counter()
    if case != "own-memmap":  # reads the files "own" wrote
        build(case, n, root)
    build_s = time.perf_counter() - start
    before = current_rss_mb()
    count, read = reader(case, root)
    assert count == n, (case, count)
    order = np.random.default_rng(1).permutation(n)
    start = time.perf_counter()
    total = 0
    for i in order:
        audio, frames = read(int(i))
        total += audio.shape[0] + frames.shape[0]
    read_s = time.perf_counter() - start
    return {
        "case": case,
        "n": n,
        "build_s": round(build_s, 2),
        "random_read_samples_per_s": round(n / read_s),
        "rss_growth_while_reading_mb": round(current_rss_mb() - before, 1),
        "peak_rss_mb": round(rss_mb()),
        "disk_mb": round(
            sum(f.stat().st_size for f in (root / DIRS[case]).rglob("*") if f.is_file()) / 2**20, 1
        ),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("datasets", "litdata", "own", "own-memmap"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", case, str(n), tmp],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            print(lines[-1] if lines else f"{case} failed: {out.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
