"""Multirun (-m) with multi-process training: argv-relaunching DDP is refused before anything runs; spawned
processes work and the sweep runs once (one study, one parent run, one child run per trial)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli


def _runs(root: Path):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.slow
def test_multirun_with_relaunching_ddp_is_refused(isolated_root: Path):
    proc = run_cli(
        "gru-mm-train", "-m", "trainer=ddp_cpu", "debug=smoke", "seed=1,2", f"paths.root={isolated_root}"
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gru-mm-train: trainer.strategy: ddp with 2 processes under multirun (-m)"), (
        proc.stderr
    )
    assert "hydra.launcher.tasks_per_node=trainer.devices" in last and "start_method=spawn" in last
    assert "Traceback" not in proc.stderr
    assert not list(isolated_root.rglob("*.ckpt")) and not list(isolated_root.rglob("train_ddp_process_*"))
    assert not _runs(isolated_root), "nothing may be logged before the refusal"


@pytest.mark.slow
def test_optuna_sweep_with_spawned_ddp_trials(isolated_root: Path):
    proc = run_cli(
        "gru-mm-train",
        "-m",
        "hparams_search=avdigits",
        "debug=smoke",
        "test=false",
        "hydra.sweeper.n_trials=1",
        "trainer=ddp_cpu",
        "trainer.strategy.start_method=spawn",
        f"paths.root={isolated_root}",
        "hydra.sweeper.study_name=spawned",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    sweep = isolated_root / "logs" / "sweeps" / "spawned"
    study = optuna.load_study(study_name="spawned", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"], (
        "one job folder: the sweep ran once"
    )
    runs = _runs(isolated_root)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and len(children) == 1, [r.data.tags.get("mlflow.runName") for r in runs]
    assert children[0].data.tags["mlflow.parentRunId"] == parent[0].info.run_id
    assert children[0].info.status == "FINISHED" and "val/acc" in children[0].data.metrics
