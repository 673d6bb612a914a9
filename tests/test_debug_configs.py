"""conf/debug/: each debugging config runs through the real CLI and does what it is for."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli

TINY = ["data.source.n_train=32", "data.source.n_val=16", "data.source.n_test=16", "data.batch_size=16"]


def _train(root: Path, *overrides: str):
    result = run_cli(
        "gru-mm-train", f"paths.root={root}", "trainer.enable_progress_bar=false", *TINY, *overrides
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (root / "logs" / "train" / "runs").iterdir()
    return result, run_dir


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with path.open() as f:
        return list(csv.DictReader(f))


def _mlflow_runs(root: Path) -> list:
    """The runs in the project's local store (none when there is no store)."""
    if not (root / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_fdr_runs_one_batch_per_loop_and_logs_nothing(isolated_root):
    result, run_dir = _train(isolated_root, "debug=fdr")
    out = result.stdout + result.stderr
    assert "will run the requested loop using 1 batch(es)" in out
    assert "`Trainer.fit` stopped: `max_steps=1` reached." in out  # one training batch, then fit ended
    assert "epoch 1/1 " in out  # EpochSummary: the one validation ran
    assert not _mlflow_runs(isolated_root), "fast_dev_run made an MLflow run"
    assert not (run_dir / "csv").exists(), "Lightning's dummy logger should have replaced the csv logger"


@pytest.mark.slow
def test_overfit_repeats_a_few_batches_and_the_training_loss_falls(isolated_root):
    # 2 batches of 16 are the whole (tiny) training split, so every epoch sees the same samples
    _, run_dir = _train(
        isolated_root,
        "debug=overfit",
        "trainer.overfit_batches=2",
        "trainer.max_epochs=8",
        "logger=csv",
        "model.modality_dropout=0",
    )
    rows = _metrics(run_dir)
    steps = [r for r in rows if r.get("train/loss_step")]
    assert len(steps) == 2 * 8, "overfit_batches=2 should run 2 training batches in each of 8 epochs"
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0], f"the training loss did not fall: {losses}"
    assert not [k for k in rows[0] if k.startswith("test/")], "debug=overfit skips the test split"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("profiler", "report"),
    [("simple", "FIT Profiler Report"), ("advanced", "Profile stats for: run_training_epoch")],
)
def test_profiler_reports_time_per_hook(isolated_root, profiler, report):
    result, _ = _train(isolated_root, "debug=profiler", f"trainer.profiler={profiler}", "logger=csv")
    out = result.stdout + result.stderr  # Lightning logs the report through its own handler (stderr)
    assert report in out
    assert "run_training_epoch" in out


@pytest.mark.slow
def test_a_run_without_any_logger_trains_and_keeps_its_checkpoints(isolated_root):
    # the default callbacks include Lightning's LearningRateMonitor, which refuses a trainer without a logger
    result, run_dir = _train(isolated_root, "debug=smoke", "logger=none")
    assert "epoch 1/" in result.stdout + result.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (isolated_root / "mlflow.db").exists()
