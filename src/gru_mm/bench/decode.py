"""First-run decoding of a manifest: by ranks started together (as SLURM or torchrun start them), and
by one process with one thread or several.

`shared`: each rank knows its rank (RANK/WORLD_SIZE), decodes its share first, then reads the rest
from the cache. `each`: the ranks do not know (the behaviour before sharing), so every one decodes
every file. (Both with one decoding thread per rank.) `threads`: one process decoding with
`data.source.decode_threads` 1 and N, with torch's default intra-op threads. These three decode on
the memory path (data.storage=memory, the per-file .npz cache). `processes`: one process building the
store (data.storage=store) with `data.source.decode_processes` 1 and N, one torch thread each. Each
mode starts from an empty cache; the ranks are real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
from gru_mm.data.sources.manifest import Manifest
m = Manifest(sys.argv[1], cache_dir=sys.argv[2], decode_threads=int(sys.argv[3]), storage=sys.argv[4],
             decode_processes=int(sys.argv[5]))
start = time.perf_counter()
m.load()
print(json.dumps({"decoded": m.cache.misses, "from_cache": m.cache.hits,
                  "load_s": time.perf_counter() - start}))
"""


def write_corpus(root: Path, rows: int, seconds: float) -> Path:
    """`rows` wav files of noisy tones at 22.05 kHz (resampled to 16 kHz when decoded) and a manifest."""
    import soundfile

    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    lines = ["id,label,audio"]
    t = np.arange(int(22050 * seconds)) / 22050
    for i in range(rows):
        wave = np.sin(2 * np.pi * (200 + 50 * (i % 7)) * t) + 0.1 * rng.normal(size=t.size)
        soundfile.write(root / "audio" / f"{i}.wav", (0.3 * wave).astype(np.float32), 22050)
        lines.append(f"s{i:04d},{'ab'[i % 2]},audio/{i}.wav")
    path = root / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ranks(manifest: Path, cache: Path, ranks: int, mode: str, threads: int = 1) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")
    }
    # one rank per core, as torchrun sets it; one process keeps torch's own threads (its decoding processes
    # set one thread each themselves)
    if mode not in ("threads", "processes"):
        env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(manifest), str(cache), str(threads)]
            + (["store", str(threads)] if mode == "processes" else ["memory", "1"]),
            stdout=subprocess.PIPE,
            text=True,
            env=env | ({"RANK": str(r), "WORLD_SIZE": str(ranks)} if mode == "shared" else {}),
        )
        for r in range(ranks)
    ]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise RuntimeError("a rank failed")
    return {
        "mode": mode,
        "ranks": ranks,
        "threads": threads,
        "wall_s": round(wall, 2),
        "slowest_load_s": round(max(o["load_s"] for o in outs), 2),
        "decoded_total": sum(o["decoded"] for o in outs),
        "from_cache_total": sum(o["from_cache"] for o in outs),
    }


def run(ranks: int, rows: int, seconds: float, rounds: int, out: Path | None, threads: int = 2) -> list[dict]:
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_corpus(Path(tmp), rows, seconds)
        cache = Path(tmp) / "cache"
        for _ in range(rounds):  # alternate the modes so drifting machine load hits all alike
            for mode in ("each", "shared"):
                records.append({"rows": rows, **run_ranks(manifest, cache, ranks, mode)})
            for mode in ("threads", "processes"):
                for n in (1, threads):
                    records.append({"rows": rows, **run_ranks(manifest, cache, 1, mode, n)})
    print(
        f"{'mode':<8} {'ranks':>5} {'threads':>7} {'rows':>5} {'wall s':>7} {'load s':>7} {'decoded':>8} "
        f"{'from cache':>10}"
    )
    for r in records:
        print(
            f"{r['mode']:<8} {r['ranks']:>5} {r['threads']:>7} {r['rows']:>5} {r['wall_s']:>7.2f} "
            f"{r['slowest_load_s']:>7.2f} {r['decoded_total']:>8} {r['from_cache_total']:>10}"
        )
    if out:
        out.write_text(json.dumps(records, indent=1) + "\n")
    return records
