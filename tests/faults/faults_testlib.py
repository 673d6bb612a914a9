"""Helpers for the fault tests: the CLIs with this folder importable, crafted checkpoints, MLflow reads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

import cli_zygote

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
# A short, fast run: 2 training batches of 8 small samples per epoch, 1 validation batch; no test, no model.
FAST = [
    "debug=smoke",
    "data.source.n_train=32",
    "data.source.n_val=16",
    "data.source.n_test=16",
    "data.batch_size=8",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "model.gru.hidden_size=16",
    "test=false",
    "log_model=false",
    "~callbacks.system_metrics",
]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run(
    name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """One of the project's console scripts, run as a user would (output captured as text; forked from
    the CLI zygote: tests/cli_zygote.py)."""
    return cli_zygote.run([str(BIN / name), *args], env=cli_env(env), cwd=REPO, timeout=timeout)


def start(
    name: str, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """The same, in the background (for killing it); output goes to `log`."""
    return cli_zygote.popen([str(BIN / name), *args], env=cli_env(env), cwd=REPO, log=log)


def wait_for(
    condition, timeout: float, what: str, *procs, logs: Sequence[Path] = (), every: float = 0.05
) -> None:
    """Poll `condition` every `every` s until it holds; fail naming `what` when `timeout` s pass first or one
    of `procs` ends first (with the tails of `logs` in the message)."""
    deadline = time.monotonic() + timeout
    while not condition():
        ended = [p.returncode for p in procs if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            because = f"a process ended (exit {ended[0]})" if ended else "timed out"
            tails = "".join(f"\n{log}:\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            pytest.fail(f"{because} before {what}{tails}")
        time.sleep(every)


def craft(source: Path, target: Path, change: Callable[[dict], None]) -> Path:
    """A copy of a real checkpoint with `change` applied to its loaded dict, written with plain torch.save."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    change(ckpt)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, target)
    return target


def checkpoints_under(root: Path) -> list[Path]:
    return sorted(root.glob("logs/train/runs/*/checkpoints/*.ckpt"))


def metric_history(root: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def train_runs(root: Path, experiment: str = "avdigits"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return (
        [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    )
