"""The test report: everything it logs, in process on a small test split, and end to end through
`gru-mm-train` (each fusion) and `gru-mm-eval`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

from conftest import run_cli
from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.evaluation.report import report
from gru_mm.paths import CONF_DIR as CONF
from models.model_testlib import FUSIONS, SHAPES, build_test_module


class SmallTestSplit:
    """A datamodule's evaluation face: a fixed test split of 16 samples, 10 named classes."""

    num_classes = 10
    trainer = None

    def __init__(self):
        rng = np.random.default_rng(0)
        samples = [
            Sample(
                f"s{i}",
                i % 10,
                {
                    "audio": rng.normal(size=(int(rng.integers(0, 30)), 40)).astype(np.float32),
                    "video": rng.random((int(rng.integers(1, 9)), 1, 8, 8)).astype(np.float32),
                },
            )
            for i in range(16)
        ]
        self.batches = [Collate(SHAPES)(samples[:8]), Collate(SHAPES)(samples[8:])]

    def test_dataloader(self):
        return self.batches

    def meta(self):
        return {"classes": [f"digit{k}" for k in range(10)]}


def test_report_logs_the_tables_metrics_and_plots(tmp_path):
    module = build_test_module("model/fusion=late")  # a GRU per modality: gates too
    logger = MLFlowLogger(
        "x", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts")
    )
    metrics = report(module, SmallTestSplit(), logger, device="cpu")
    assert module.training  # evaluated in eval mode, handed back as it came
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = logger.run_id
    logged = client.get_run(run_id).data.metrics
    assert {
        "test_ablation/none/acc",
        "test_ablation/audio/f1",
        "test_ablation/video/acc",
        "test_attribution/audio/share",
        "test_gradient/audio/start_vs_peak",
    } <= set(metrics)
    assert {k: logged[k] for k in metrics} == pytest.approx(metrics)
    assert {"test_class/digit3/precision", "test_class/digit3/recall", "test_class/digit3/f1"} <= set(logged)
    shares = metrics["test_attribution/audio/share"] + metrics["test_attribution/video/share"]
    assert shares == pytest.approx(1)
    folders = ("ablation", "per_class", "plots")
    artifacts = sorted(a.path for d in folders for a in client.list_artifacts(run_id, d))
    assert artifacts == [
        "ablation/ablation.csv",
        "ablation/ablation.md",
        "per_class/test_per_class.csv",
        "per_class/test_per_class.md",
        "plots/attribution.png",
        "plots/gates_audio.png",
        "plots/gates_video.png",
        "plots/gradient_through_time.png",
        "plots/test_confusion_matrix.png",
    ]
    per_class = client.download_artifacts(run_id, "per_class/test_per_class.csv", str(tmp_path))
    support = [int(line.split(",")[4]) for line in Path(per_class).read_text().splitlines()[1:]]
    assert support == [2, 2, 2, 2, 2, 2, 1, 1, 1, 1]  # the whole split counted once


def test_without_a_logger_the_report_is_the_ablation_only():
    metrics = report(build_test_module("model/fusion=late"), SmallTestSplit())
    assert metrics and all(k.startswith("test_ablation/") for k in metrics)


@pytest.fixture(scope="module")
def fusion_runs(tmp_path_factory):
    """One smoke training per fusion type, as one Hydra multirun (one process, one generated data set)."""
    root = tmp_path_factory.mktemp("fusions")
    result = run_cli(
        "gru-mm-train",
        "-m",
        "debug=smoke",
        f"paths.root={root}",
        f"model/fusion={','.join(FUSIONS)}",
        "log_model=false",  # the MLflow model is tested elsewhere (tests/serving): here, the report
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("avdigits")
    runs = {
        r.data.params["model/fusion/_target_"].rsplit(".", 1)[1]: r
        for r in client.search_runs([exp.experiment_id])
    }
    return root, client, runs


@pytest.mark.slow
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_end_to_end_with_an_ablation_table(fusion_runs, fusion):
    _, client, runs = fusion_runs
    target = OmegaConf.load(CONF / "model" / "fusion" / f"{fusion}.yaml")._target_
    run = runs[target.rsplit(".", 1)[1]]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("test/acc", "test_ablation/none/acc", "test_ablation/audio/acc", "test_ablation/video/f1"):
        assert key in metrics, f"{key} missing from {sorted(metrics)}"
    # the smoke test split is tested whole, so "none removed" is the test accuracy itself
    assert metrics["test_ablation/none/acc"] == pytest.approx(metrics["test/acc"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "ablation")] == [
        "ablation/ablation.csv",
        "ablation/ablation.md",
    ]


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
    assert plots == [
        "plots/attribution.png",
        "plots/gates_audio.png",
        "plots/gates_video.png",
        "plots/gradient_through_time.png",
        "plots/test_confusion_matrix.png",
    ]
    shares = metrics["test_attribution/audio/share"] + metrics["test_attribution/video/share"]
    assert shares == pytest.approx(1)
    # per class, from the same pass: the support sums to the test split, and recall weighted by it is acc
    per_class = client.download_artifacts(run.info.run_id, "per_class/test_per_class.csv", str(root))
    rows = [line.split(",") for line in Path(per_class).read_text().splitlines()]
    assert rows[0] == ["class", "precision", "recall", "f1", "support"] and len(rows) == 1 + 10
    support = [int(r[4]) for r in rows[1:]]
    recall_acc = sum(float(r[2]) * n for r, n in zip(rows[1:], support, strict=True)) / sum(support)
    assert recall_acc == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["test_class/3/recall"] == pytest.approx(float(rows[4][2]))
