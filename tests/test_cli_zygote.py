"""The test suite's forked CLIs (tests/cli_zygote.py) behave as fresh interpreters do: same exit code and
output, the request's environment, working folder and PYTHONPATH, signals, `python -m`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import cli_zygote
from conftest import BIN, REPO

PROBE = """
import os, sys
print(os.getcwd(), os.environ.get("PROBE_VALUE"), sys.argv[1:], flush=True)
import probe_module  # only importable through the request's PYTHONPATH
print("imported", probe_module.VALUE, file=sys.stderr)
sys.exit(int(os.environ["PROBE_EXIT"]))
"""


@pytest.fixture
def zygote():
    zygote = cli_zygote.shared()
    if zygote is None:
        pytest.skip("GRU_MM_TEST_FORK=0: no zygote")
    return zygote


@pytest.mark.slow  # a fresh interpreter: ~7 s of imports
def test_a_forked_cli_fails_as_a_fresh_one_does(zygote, tmp_path):
    command = [str(BIN / "gru-mm-train"), "data.batch_size=-1", f"paths.root={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    forked = cli_zygote.run(command, env=env, cwd=REPO, timeout=120)
    fresh = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert forked.returncode == fresh.returncode == 1
    assert forked.stderr.strip().splitlines()[-1] == fresh.stderr.strip().splitlines()[-1]
    assert "data.batch_size must be >= 1, got -1" in forked.stderr


def test_a_module_gets_the_requests_environment_folder_and_path(zygote, tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "probe_module.py").write_text("VALUE = 42\n")
    (tmp_path / "probe.py").write_text(PROBE)
    env = {
        **os.environ,
        "PROBE_VALUE": "seen",
        "PROBE_EXIT": "3",
        "PYTHONPATH": str(tmp_path / "lib"),
    }
    # `python -m probe` from tmp_path: the working folder is first on sys.path, as for a fresh -m
    result = cli_zygote.run([sys.executable, "-m", "probe", "a", "b"], env=env, cwd=tmp_path, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        3,
        f"{tmp_path} seen ['a', 'b']\n",
        "imported 42\n",
    )
    assert "probe_module" not in sys.modules


def test_a_killed_child_reports_the_signal(zygote, tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    log = tmp_path / "log"
    proc = cli_zygote.popen([sys.executable, "-m", "sleeper"], env=dict(os.environ), cwd=tmp_path, log=log)
    assert isinstance(proc, cli_zygote.ForkedProcess)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert log.read_text() == "up\n"


def test_a_variable_read_when_torch_loads_gets_a_fresh_interpreter(zygote):
    env = dict(zygote.env)
    assert not cli_zygote.needs_fresh_interpreter(env, zygote.env)
    assert not cli_zygote.needs_fresh_interpreter({**env, "PROBE": "1"}, zygote.env)
    assert cli_zygote.needs_fresh_interpreter({**env, "OMP_NUM_THREADS": "7"}, zygote.env)
    assert cli_zygote.needs_fresh_interpreter({**env, "MALLOC_ARENA_MAX": "2"}, zygote.env)
    assert not cli_zygote.forkable(["/usr/bin/env", "gru-mm-train"])
    assert cli_zygote.forkable([str(BIN / "gru-mm-eval")])
