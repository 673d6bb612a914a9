"""The per-class table: precision, recall, F1 and support from confusion counts, and its MLflow logging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gru_mm.evaluation.per_class import log_per_class, per_class_table


def test_per_class_table_from_confusion_counts():
    counts = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 4]])  # class b never occurs and is predicted once
    table = per_class_table(counts, ["a", "b", "c"])
    assert [r["class"] for r in table] == ["a", "b", "c"] and [r["support"] for r in table] == [4, 0, 6]
    a, b, c = table
    assert (a["precision"], a["recall"]) == (pytest.approx(3 / 5), pytest.approx(3 / 4))
    assert a["f1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert (b["precision"], b["recall"], b["f1"]) == (0.0, 0.0, 0.0)  # never right: 0, not NaN
    assert (c["precision"], c["recall"]) == (pytest.approx(1.0), pytest.approx(4 / 6))
    assert per_class_table(np.eye(2, dtype=int))[1]["class"] == "1"  # unnamed classes: their index


def test_per_class_is_logged_as_metrics_and_a_table(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("x", artifact_location=str(tmp_path / "artifacts")))
    table = per_class_table(np.array([[2, 0], [1, 1]]), ["yes", "no:maybe"])
    log_per_class(client, run.info.run_id, table)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["test_class/yes/recall"] == 1.0
    assert metrics["test_class/no_maybe/precision"] == 1.0  # ":" is not allowed in a metric name
    local = client.download_artifacts(run.info.run_id, "per_class/test_per_class.csv", str(tmp_path))
    assert Path(local).read_text().splitlines()[0] == "class,precision,recall,f1,support"
    assert client.download_artifacts(run.info.run_id, "per_class/test_per_class.md", str(tmp_path))
