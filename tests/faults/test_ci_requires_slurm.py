"""In CI (.ci/run as root, which installs and starts SLURM), a SLURM that does not start fails CI instead of
letting the SLURM tests skip themselves; elsewhere they still skip when there is no cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_TEST = "tests/distributed/test_slurm_jobs.py::test_sbatch_examples_are_accepted_by_slurm"


def _pytest(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            SLURM_TEST,
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'pytest'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_slurm_tests_skip_without_a_cluster_but_fail_where_it_is_required(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CONF", "GRU_MM_REQUIRE_SLURM")}
    skipped = _pytest(env, tmp_path)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout[-2000:]
    required = _pytest({**env, "GRU_MM_REQUIRE_SLURM": "1"}, tmp_path)
    assert required.returncode == 1 and "1 failed" in required.stdout, required.stdout[-2000:]
    assert "GRU_MM_REQUIRE_SLURM=1, and " in required.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")  # start_slurm.sh: not while another test uses the cluster
@pytest.mark.skipif(os.geteuid() != 0, reason=".ci/run starts SLURM only as root")
@pytest.mark.skipif(
    shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists(),
    reason="SLURM is not installed (.ci/run installs it; a test does not)",
)
def test_ci_fails_when_slurm_does_not_start(tmp_path):
    """The real .ci/run and start_slurm.sh, with a state folder that cannot be created; `make` is replaced
    by a marker so that, whatever happens, the test suite is not run from inside itself."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "make").write_text(f"#!/bin/sh\ntouch {tmp_path / 'make-ran'}\n")
    (shim / "make").chmod(0o755)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "SLURM_TEST_DIR": str(blocker / "slurm"),
    }
    result = subprocess.run(
        ["bash", str(REPO / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "SLURM could not be started" in result.stderr and "failing CI" in result.stderr
    assert not (tmp_path / "make-ran").exists(), "the tests ran although SLURM did not start"
