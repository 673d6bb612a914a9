"""Audio, text and series encoders of gru-mm against logistic regression on the same inputs (issue 11).

For each modality: generate a data set whose test split comes from unseen speakers / authors / sources
(gru_mm.bench.baseline_data), fit scikit-learn logistic regressions on the usual features (audio: MFCC and
log-mel mean+std; text: bag of words; series: summary statistics, and the series resampled and flattened),
train gru-mm on that modality alone through `gru-mm-train`, and print a table of test accuracies; the
records (with each run's command line) go to a JSON file.

    .venv/bin/python scripts/encoder_baselines.py --out runs/baselines [--modalities audio text series]
        [--epochs 20] [--seed 0] [--train-groups N] [--json baselines.json]

Prints one row per modality: classes, each baseline's test accuracy, gru-mm's, and gru-mm minus the best
baseline (the margin a test holds it to).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from gru_mm.bench import baselines
from gru_mm.bench.baseline_data import GENERATORS

# each generator's groups per split (speakers, authors, sources): (argument, validation and test groups)
GROUPS = {"audio": ("speakers", (4, 8)), "text": ("authors", (5, 10)), "series": ("sources", (5, 10))}


def table(results: list[dict]) -> str:
    lines = [
        "| modality | classes | logistic regression (features: test acc) | gru-mm test acc | gru-mm - best |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        base = ", ".join(
            f"{k.removeprefix('logreg_')}: {v['test_acc']:.3f}"
            for k, v in r.items()
            if k.startswith("logreg_")
        )
        gru = r["gru_mm"]["test_acc"]
        lines.append(f"| {r['modality']} | {r['classes']} | {base} | {gru:.3f} | {r['margin']:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the generated data and the runs")
    parser.add_argument(
        "--modalities", nargs="+", default=list(baselines.ENCODERS), choices=list(baselines.ENCODERS)
    )
    parser.add_argument("--epochs", type=int, default=20, help="gru-mm training epochs")
    parser.add_argument("--seed", type=int, default=0, help="the data generator's seed (another data set)")
    parser.add_argument(
        "--train-groups",
        type=int,
        help="training speakers / authors / sources (default: the generator's, 16 / 20 / 20); fewer: a "
        "harder set, whose models overfit more easily",
    )
    parser.add_argument("--json", type=Path, help="records file (default: OUT/encoder_baselines.json)")
    parser.add_argument(
        "extra", nargs="*", help="more gru-mm-train overrides, e.g. model.gru.hidden_size=128"
    )
    args = parser.parse_args(argv)
    results = []
    for modality in args.modalities:
        groups = {}
        if args.train_groups:
            name, held_out = GROUPS[modality]
            groups = {name: (args.train_groups, *held_out)}
        generate = functools.partial(GENERATORS[modality], seed=args.seed, **groups)
        result = baselines.compare(
            modality, args.out / modality, generate, gru_extra=args.extra, epochs=args.epochs
        )
        results.append(result)
        print(
            json.dumps(
                {k: v for k, v in result.items() if k != "gru_mm"} | {"gru_mm": result["gru_mm"]["test_acc"]}
            ),
            flush=True,
        )
    print(table(results))
    path = args.json or args.out / "encoder_baselines.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"records: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
