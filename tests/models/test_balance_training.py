"""The balancing remedies and the not-learning warning through real `gru-mm-train` runs, read back from
MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli

pytestmark = pytest.mark.slow

TAG = "gru_mm.modality_warning"
SMALL_AVDIGITS = (
    "data.source.n_train=480",
    "data.source.n_val=160",
    "data.source.n_test=160",
    "trainer.enable_progress_bar=false",
    "log_model=false",
)


def only_run(root: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_auxiliary_heads_and_ogm_ge_train_and_log_each_modality(tmp_path):
    result = run_cli(
        "gru-mm-train",
        f"paths.root={tmp_path}",
        *SMALL_AVDIGITS,
        "trainer.max_epochs=3",
        "model.unimodal_heads.weight=1",
        "model.ogm_ge.enabled=true",
        "model.ogm_ge.alpha=2",
        timeout=2700,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(tmp_path, "avdigits")
    for m in ("audio", "video"):
        losses = history(client, run.info.run_id, f"train_modality/{m}/loss")
        assert len(losses) == 3 and losses[-1] < losses[0] * 0.95, (m, losses)  # each own head learns
        assert len(history(client, run.info.run_id, f"val_modality/{m}/acc")) == 3  # every validation epoch
    assert run.data.metrics["val_modality/video/acc"] > 0.15  # chance is 0.1 (video's ceiling about 0.5)
    # OGM-GE damped someone's gradient on average, and never amplified one
    coefficients = [run.data.metrics[f"train_modality/{m}/ogm_coefficient"] for m in ("audio", "video")]
    assert min(coefficients) < 0.99 and max(coefficients) <= 1.0
    assert run.data.metrics["test/acc"] > 0.3  # the fused model still learns (chance 0.1)


def two_modality_npz(path: Path, informative_b: bool, seed: int = 0) -> Path:
    """4 classes, two series modalities. a says the class's high bit, b its low bit (both needed, each
    worth half), or with `informative_b=False` a says the whole class and b is pure noise."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in {"train": 320, "val": 120, "test": 120}.items():
        labels = rng.integers(0, 4, count)
        lengths = {m: rng.integers(3, 12, count) for m in ("a", "b")}
        a_value = labels // 2 if informative_b else labels
        a = [rng.normal(0, 0.3, (lengths["a"][i], 4)) + 1.5 * a_value[i] for i in range(count)]
        b = [
            rng.normal(0, 0.3, (lengths["b"][i], 4)) + (1.5 * (labels[i] % 2) if informative_b else 0.0)
            for i in range(count)
        ]
        for m, seqs in {"a": a, "b": b}.items():
            arrays[f"{split}/{m}"] = np.concatenate(seqs).astype(np.float32)
            arrays[f"{split}/{m}_lengths"] = lengths[m]
        arrays[f"{split}/labels"] = labels
    np.savez(path, **arrays)
    return path


def test_a_modality_of_pure_noise_is_warned_about_and_two_informative_ones_are_not(tmp_path):
    noise = two_modality_npz(tmp_path / "noise_b.npz", informative_b=False)
    both = two_modality_npz(tmp_path / "both.npz", informative_b=True)
    result = run_cli(
        "gru-mm-train",
        "-m",
        f"paths.root={tmp_path}",
        f"data.path={noise},{both}",
        "data=features",
        "data.source.task=multiclass",
        "+model/encoder@model.encoders.a=series_linear",
        "+model/encoder@model.encoders.b=series_linear",
        "trainer.max_epochs=6",
        "trainer.enable_progress_bar=false",
        "log_model=false",
        timeout=2700,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(tmp_path, "noise_b")
    tags = {k: v for k, v in run.data.tags.items() if k.startswith(TAG)}
    assert list(tags) == [f"{TAG}.b"], tags
    assert "modality b does not learn" in tags[f"{TAG}.b"]
    assert run.data.metrics["test_modality/a/acc"] > 0.8  # a alone knows the class (chance about 0.25)
    assert "modality b does not learn" in result.stderr + result.stdout  # and the log says so
    client, run = only_run(tmp_path, "both")
    assert not [k for k in run.data.tags if k.startswith(TAG)], run.data.tags
    for m in ("a", "b"):  # each alone knows half the class: above chance, below the fused model
        assert 0.4 < run.data.metrics[f"test_modality/{m}/acc"] < run.data.metrics["test/acc"]
