"""Helpers for the sweeper tests: run the tiny app as a subprocess, read its study and MLflow runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "app" / "sweep_app.py"


def app_command(sweep_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(APP),
        "-m",
        "hydra/sweeper=optuna",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.searchpath=[file://{REPO / 'conf'}]",  # the project's conf/hydra/launcher/*.yaml
        *overrides,
    ]


def app_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_app(tmp_path: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        app_command(tmp_path / "sweep", *overrides),
        env=app_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc


def load_study(storage: str, name: str = "sweep_app") -> optuna.Study:
    from hydra_plugins.gru_mm_optuna_sweeper._storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


def sqlite_storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
