"""Per-modality ablation: the table's rows, its MLflow logging, and end to end through train and eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from model_testlib import FUSIONS, SHAPES, build_test_module

from conftest import run_cli
from gru_mm.data.batch import Batch, Sample
from gru_mm.data.collate import Collate
from gru_mm.models.ablation import ablation_table, log_ablation, per_class_table, table_csv
from gru_mm.models.multimodal import set_absent

_module = build_test_module


def _batches(n_batches=3, size=8):
    rng = np.random.default_rng(0)
    collate = Collate(SHAPES)
    out = []
    for b in range(n_batches):
        samples = [Sample(f"{b}-{i}", int(rng.integers(10)), {
            "audio": rng.normal(size=(int(rng.integers(0, 30)), 40)).astype(np.float32),
            "video": rng.random((int(rng.integers(1, 9)), 1, 8, 8)).astype(np.float32),
        }) for i in range(size)]
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
    module.eval()
    batches = _batches()
    table = ablation_table(module, batches)
    assert [row["removed"] for row in table] == ["none", "audio", "video"]
    assert set(table[0]) == {"removed", "acc", "f1"}
    for row in table:
        removed = None if row["removed"] == "none" else row["removed"]
        assert row["acc"] == pytest.approx(_accuracy(module, batches, removed))
    assert not module.training


def test_the_kept_row_feeds_the_confusion_matrix_from_the_same_pass():
    from gru_mm.tracking.plots import ConfusionCounter, confusion_counts

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


@pytest.fixture(scope="module")
def fusion_runs(tmp_path_factory):
    """One smoke training per fusion type, as one Hydra multirun (one process, one generated data set)."""
    root = tmp_path_factory.mktemp("fusions")
    result = run_cli("gru-mm-train", "-m", "debug=smoke", f"paths.root={root}", f"model/fusion={','.join(FUSIONS)}",
                     timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("avdigits")
    runs = {r.data.params["model/fusion/_target_"].rsplit(".", 1)[1]: r for r in client.search_runs([exp.experiment_id])}
    return root, client, runs


@pytest.mark.slow
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_end_to_end_with_an_ablation_table(fusion_runs, fusion):
    _, client, runs = fusion_runs
    names = {"late": "LateFusion", "attention": "AttentionFusion", "tensor": "TensorFusion", "lmf": "LowRankFusion",
             "early": "EarlyFusion", "event": "EventFusion"}
    run = runs[names[fusion]]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("test/acc", "test_ablation/none/acc", "test_ablation/audio/acc", "test_ablation/video/f1"):
        assert key in metrics, f"{key} missing from {sorted(metrics)}"
    # the smoke test split is tested whole, so "none removed" is the test accuracy itself
    assert metrics["test_ablation/none/acc"] == pytest.approx(metrics["test/acc"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "ablation")] == [
        "ablation/ablation.csv", "ablation/ablation.md"]


@pytest.mark.slow
def test_eval_logs_the_ablation_of_a_checkpoint(fusion_runs):
    root, client, runs = fusion_runs
    assert FUSIONS[0] == "late"  # job 0 of the multirun
    ckpt = next(root.glob("logs/train/multiruns/*/0/checkpoints/epoch*.ckpt"))
    result = run_cli("gru-mm-eval", f"ckpt_path={ckpt}", f"paths.root={root}", "run_name=eval-ablation")
    assert result.returncode == 0, result.stderr[-3000:]
    exp = client.get_experiment_by_name("avdigits")
    (run,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'eval-ablation'")
    metrics = run.data.metrics
    assert metrics["test_ablation/none/acc"] == pytest.approx(metrics["test/acc"])
    assert {"test_ablation/audio/acc", "test_ablation/video/acc"} <= set(metrics)
    csv = client.download_artifacts(run.info.run_id, "ablation/ablation.csv", str(root))
    assert Path(csv).read_text().splitlines()[0] == "removed,acc,f1"
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    # the confusion matrix from the ablation's pass; gates for the per-modality GRUs of the late fusion
    assert plots == ["plots/attribution.png", "plots/gates_audio.png", "plots/gates_video.png",
                     "plots/gradient_through_time.png", "plots/test_confusion_matrix.png"]
    assert metrics["test_attribution/audio/share"] + metrics["test_attribution/video/share"] == pytest.approx(1)
    # per class, from the same pass: the support sums to the test split, and recall weighted by it is acc
    per_class = client.download_artifacts(run.info.run_id, "per_class/test_per_class.csv", str(root))
    rows = [line.split(",") for line in Path(per_class).read_text().splitlines()]
    assert rows[0] == ["class", "precision", "recall", "f1", "support"] and len(rows) == 1 + 10
    support = [int(r[4]) for r in rows[1:]]
    recall_acc = sum(float(r[2]) * n for r, n in zip(rows[1:], support, strict=True)) / sum(support)
    assert recall_acc == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["test_class/3/recall"] == pytest.approx(float(rows[4][2]))


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


def test_binary_confusion_counts_threshold_the_logit_at_zero():
    from gru_mm.tracking.plots import ConfusionCounter

    counter = ConfusionCounter(1, binary=True)
    batch = Batch(["a", "b", "c", "d"], torch.tensor([0.0, 1.0, 1.0, 0.0]), {})
    counter(torch.tensor([-2.0, 0.5, -0.1, 3.0]), batch)
    assert counter.counts.tolist() == [[1, 1], [1, 1]]  # rows: true 0, 1; columns: predicted 0, 1
