"""Helpers for the sweeper tests: run the tiny app as a subprocess, read its study and MLflow runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

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


def slurm_unavailable() -> str | None:
    """Why SLURM cannot run jobs here, or None when a controller answers with a usable node."""
    if shutil.which("sbatch") is None:
        return "SLURM is not installed (no sbatch); scripts/cluster/start_slurm.sh sets up a local cluster"
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set; export the path scripts/cluster/start_slurm.sh prints"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer (sinfo timed out)"
    if out.returncode != 0:
        return f"the SLURM controller is not reachable: {out.stderr.strip()}"
    if not {"idle", "mix", "alloc"} & set(out.stdout.split()):
        return f"no SLURM node is up (sinfo: {out.stdout.split()})"
    return None


def slurm_or_skip() -> None:
    """Skip a test when SLURM cannot run jobs here, but fail it where GRU_MM_REQUIRE_SLURM=1: CI (.ci/run)
    starts a cluster, and a cluster that is not there must fail CI, not pass it with the SLURM tests
    skipped."""
    reason = slurm_unavailable()
    if reason and os.environ.get("GRU_MM_REQUIRE_SLURM") == "1":
        pytest.fail(f"GRU_MM_REQUIRE_SLURM=1, and {reason}")
    if reason:
        pytest.skip(reason)
