"""Precision, recall, F1 and support of each class, from confusion counts."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from gru_mm.evaluation.tables import log_table


def per_class_table(counts: np.ndarray, classes: Sequence[str] | None = None) -> list[dict]:
    """A row per class from [true, predicted] counts; 0 where a class was never predicted or never occurs
    (as scikit-learn's zero_division=0)."""
    counts = np.asarray(counts, dtype=np.float64)
    hits, support, predicted = np.diag(counts), counts.sum(1), counts.sum(0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    names = list(classes) if classes else [str(i) for i in range(len(counts))]
    return [
        {
            "class": str(names[k]),
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k in range(len(counts))
    ]


def log_per_class(client, run_id: str, table: list[dict], prefix: str = "test_class") -> None:
    """Metrics `<prefix>/<class>/{precision,recall,f1}` and the table as
    `per_class/test_per_class.{csv,md}`."""
    for row in table:
        name = re.sub(r"[^\w\-. /]", "_", row["class"])  # what MLflow allows in a metric name
        for key in ("precision", "recall", "f1"):
            client.log_metric(run_id, f"{prefix}/{name}/{key}", row[key])
    log_table(client, run_id, table, "per_class/test_per_class")
