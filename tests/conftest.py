"""Shared fixtures: every test gets its own project root, MLflow store and no tracking env leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_restored():
    """Lightning's MLFlowLogger (and MLflow's own `_use_tracking_uri`) set MLflow's process-wide tracking
    URI, which also exports MLFLOW_TRACKING_URI; put both back after each test, so that no later test in
    this process reads, or writes to, another test's store. (MLflow has no public way to unset it.)"""
    from mlflow.tracking._tracking_service import utils

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    yield
    utils.set_tracking_uri(before)
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


@pytest.fixture
def isolated_root(tmp_path, monkeypatch) -> Path:
    """A project root in tmp: data cache, logs and the default sqlite store all land here."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def run_cli(
    name: str, *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run one of the project's console scripts as a user would; output captured as text."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO
    )
