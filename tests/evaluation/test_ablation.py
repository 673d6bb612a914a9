"""Per-modality ablation: the table's rows, the pass it shares with the confusion counts, its MLflow
logging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from gru_mm.data.batch import Batch, Sample
from gru_mm.data.collate import Collate
from gru_mm.evaluation.ablation import ablation_table, log_ablation
from gru_mm.evaluation.confusion import ConfusionCounter, confusion_counts
from gru_mm.evaluation.tables import table_csv
from gru_mm.models.multimodal import set_absent
from models.model_testlib import SHAPES, build_test_module

_module = build_test_module


def _batches(n_batches=3, size=8):
    rng = np.random.default_rng(0)
    collate = Collate(SHAPES)
    out = []
    for b in range(n_batches):
        samples = [
            Sample(
                f"{b}-{i}",
                int(rng.integers(10)),
                {
                    "audio": rng.normal(size=(int(rng.integers(0, 30)), 40)).astype(np.float32),
                    "video": rng.random((int(rng.integers(1, 9)), 1, 8, 8)).astype(np.float32),
                },
            )
            for i in range(size)
        ]
        out.append(collate(samples))
    return out


def _accuracy(module, batches, removed=None):
    correct = total = 0
    with torch.no_grad():
        for batch in batches:
            inputs = dict(batch.inputs)
            if removed:
                inputs[removed] = set_absent(inputs[removed], torch.ones(len(batch), dtype=torch.bool))
            pred = module(Batch(batch.ids, batch.target, inputs)).argmax(-1)
            correct += int((pred == batch.target).sum())
            total += len(batch)
    return correct / total


def test_ablation_table_removes_each_modality_in_turn():
    module = _module("model/fusion=attention")
    batches = _batches()
    table = ablation_table(module, batches)
    assert module.training  # evaluated in eval mode, handed back as it came
    assert [row["removed"] for row in table] == ["none", "audio", "video"]
    assert set(table[0]) == {"removed", "acc", "f1"}
    for row in table:
        removed = None if row["removed"] == "none" else row["removed"]
        assert row["acc"] == pytest.approx(_accuracy(module.eval(), batches, removed))


def test_the_kept_row_feeds_the_confusion_matrix_from_the_same_pass():
    module = _module("model/fusion=late")
    batches = _batches()
    counter, seen = ConfusionCounter(10), []

    def on_kept(logits, batch):
        seen.append(batch.ids)
        counter(logits, batch)

    ablation_table(module, batches, on_kept=on_kept)
    assert seen == [b.ids for b in batches]  # once per batch: the "none" row only
    np.testing.assert_array_equal(counter.counts, confusion_counts(module, batches, 10))
    assert counter.counts.sum() == sum(len(b) for b in batches)


def test_ablation_is_logged_as_metrics_and_a_table(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("x", artifact_location=str(tmp_path / "artifacts")))
    table = [{"removed": "none", "acc": 0.9, "f1": 0.8}, {"removed": "audio", "acc": 0.2, "f1": 0.1}]
    log_ablation(client, run.info.run_id, table)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["test_ablation/none/acc"] == 0.9 and metrics["test_ablation/audio/f1"] == 0.1
    local = client.download_artifacts(run.info.run_id, "ablation/ablation.csv", str(tmp_path))
    assert Path(local).read_text() == table_csv(table) == "removed,acc,f1\nnone,0.9,0.8\naudio,0.2,0.1\n"
    assert client.download_artifacts(run.info.run_id, "ablation/ablation.md", str(tmp_path))
