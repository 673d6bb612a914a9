"""Time per epoch of the default experiment (`gru-mm-train` with its defaults: avdigits), reading the
data from the store against holding it in memory (issue 12: within 10 %).

Runs `gru-mm-train data.storage=S` alternating store and memory (so drifting machine load hits both
alike), `--rounds` times each, with `--epochs` epochs per run, all in one project folder (the data is
generated once per storage, before the first epoch starts), and reads each epoch's time from the
run's "epoch k/n ... (X.Xs)" log line (training plus validation).

    .venv/bin/python scripts/store_epoch_time.py [--rounds 2] [--epochs 2] [--out FILE] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

EPOCH = re.compile(r"epoch (\d+)/\d+ .*\((\d+(?:\.\d+)?)s\)")


def run(storage: str, project: Path, epochs: int, overrides: list[str]) -> list[float]:
    command = [
        str(Path(sys.executable).parent / "gru-mm-train"),
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"trainer.max_epochs={epochs}",
        f"data.storage={storage}",
        f"paths.root={project}",
        *overrides,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return [float(t) for _, t in EPOCH.findall(result.stdout + result.stderr)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--root", type=Path, help="project folder to reuse (data generated there already)")
    parser.add_argument("overrides", nargs="*", help="more gru-mm-train overrides")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for storage in ("store", "memory") if i % 2 == 0 else ("memory", "store"):
                times = run(storage, args.root or Path(tmp), args.epochs, args.overrides)
                record = {"storage": storage, "round": i, "epoch_s": times}
                print(json.dumps(record), flush=True)
                records.append(record)
    median = {
        s: statistics.median(t for r in records if r["storage"] == s for t in r["epoch_s"])
        for s in ("store", "memory")
    }
    print(
        f"median epoch: store {median['store']:.1f} s, memory {median['memory']:.1f} s, "
        f"store / memory = {median['store'] / median['memory']:.3f}"
    )
    if args.out:
        args.out.write_text(json.dumps({"records": records, "median_epoch_s": median}, indent=1) + "\n")


if __name__ == "__main__":
    main()
