"""Shared fixtures: every test gets its own project root, MLflow store and no tracking env leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli_zygote

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# One intra-op thread in this process and in the runs it starts (unless the caller set others). The tests'
# models are tiny, and on a busy machine (xdist workers, DDP ranks, other jobs) OpenMP's spinning threads
# fight over the cores: a CLI test took 103 s at load 5 with two threads and 16 s on a quiet machine, with
# one thread or two. numpy's OpenBLAS spins its own threads (Triton's interpreter runs kernels in numpy).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if os.environ["OMP_NUM_THREADS"] == "1":
    import torch

    torch.set_num_threads(1)


def _shared_fixture(item: pytest.Item) -> str | None:
    """The first fixture of the project's own (not a plugin's) broader than one test that `item` uses:
    e.g. a module-scoped smoke run that several tests read."""
    for name in item.fixturenames:
        defs = item._fixtureinfo.name2fixturedefs.get(name)  # no public API tells a test's fixture scopes
        if defs and defs[-1].scope != "function" and defs[-1].baseid:
            return f"{defs[-1].baseid}::{name}"
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, the tests that share a module- or session-scoped fixture run on one worker,
    which builds it once (each worker would build its own). Slow tests are handed out first, so that no
    long test starts last while the other workers idle. (Workers sort identically, as xdist requires.)"""
    if not hasattr(config, "workerinput"):  # not an xdist worker (a pytest started by a test has its env)
        return
    for item in items:
        if not item.get_closest_marker("xdist_group") and (group := _shared_fixture(item)):
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(trylast=True)  # after xdist's hook, which appends "@<group>" to a grouped test's id
def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail loudly if xdist no longer groups (pytest 9.2 broke it silently: pytest-xdist#1386)."""
    if not (hasattr(session.config, "workerinput") and getattr(session.config.option, "loadgroup", False)):
        return
    grouped = next((item for item in session.items if item.get_closest_marker("xdist_group")), None)
    if grouped is not None and "@" not in grouped.nodeid:
        raise pytest.UsageError(
            f"pytest {pytest.__version__} drops xdist's test groups ({grouped.nodeid} has none): tests that "
            "share a fixture or a service would run at once on several workers; install pytest < 9.2"
        )


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


@pytest.fixture(autouse=True)
def _sys_path_restored():
    """mlflow.pyfunc.load_model prepends the model's code folder (a copy of gru_mm) to sys.path and leaves
    it there; processes spawned by later tests in this process inherit sys.path and imported gru_mm from
    that copy, whose configs are elsewhere (the train benchmark failed with "Primary config directory not
    found" only after test_train_cli had loaded a model in the same xdist worker)."""
    before = list(sys.path)
    yield
    sys.path[:] = before


@pytest.fixture
def isolated_root(tmp_path, monkeypatch) -> Path:
    """A project root in tmp: data cache, logs and the default sqlite store all land here."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def run_cli(
    name: str, *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run one of the project's console scripts as a user would; output captured as text. The process is
    forked from a zygote that has imported the project (tests/cli_zygote.py), unless GRU_MM_TEST_FORK=0."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    return cli_zygote.run([str(BIN / name), *args], env=full_env, cwd=REPO, timeout=timeout)


def trained_test_acc(root: Path, *args: str, experiment: str | None = None, timeout: float = 900) -> float:
    """test/acc of one `gru-mm-train ARGS paths.root=ROOT` run (in a fresh root), read back from the run's
    local MLflow store; the run must succeed and be the only one (in `experiment` when given)."""
    from mlflow.tracking import MlflowClient

    result = run_cli("gru-mm-train", *args, f"paths.root={root}", timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiments = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    (run,) = client.search_runs([e.experiment_id for e in experiments])
    return run.data.metrics["test/acc"]
