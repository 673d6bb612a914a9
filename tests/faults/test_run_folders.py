"""Two runs started in the same second get different folders (they would share last.ckpt otherwise)."""

from __future__ import annotations

import os
import sys

import pytest
from faults_testlib import REPO, cli_env, wait_for

import cli_zygote
from gru_mm.checkpoints import run_tag


def _start_two(root):
    """Two runs that start composing at the same moment (tests/faults/start_on_go.py, forked from the test
    zygote); their run folders' names."""
    go = root / "go"
    # seed=-1 fails the config check, after Hydra has made the run folder: the folder is all this needs
    args = [f"paths.root={root}", "seed=-1"]
    logs = [root / f"run{i}.log" for i in range(2)]
    root.mkdir(parents=True)
    procs = [
        cli_zygote.popen(
            [sys.executable, "-m", "start_on_go", str(go), *args], env=cli_env(), cwd=REPO, log=log
        )
        for log in logs
    ]
    ready = lambda: all("ready" in log.read_text() for log in logs)  # noqa: E731
    wait_for(ready, 120, "both runs were ready", *procs, logs=logs, every=0.01)
    go.touch()  # both go, within a millisecond or two
    assert [p.wait(180) for p in procs] == [1, 1], [log.read_text()[-2000:] for log in logs]
    assert all("gru-mm-train: seed must be" in log.read_text() for log in logs)
    return sorted(p.name for p in (root / "logs/train/runs").iterdir())


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_different_folders(tmp_path):
    for attempt in range(
        5
    ):  # both compose within a fraction of a second; now and then a second boundary falls between
        folders = _start_two(tmp_path / str(attempt))
        assert len(folders) == 2, folders  # never one shared folder
        if len({name.rsplit("_", 1)[0] for name in folders}) == 1:
            return  # the same second of `now`, two folders
    pytest.fail(f"no two runs composed in the same second in 5 tries: {folders}")


def test_a_forked_process_draws_its_own_run_tag():
    """The tag in a run folder's name is drawn per process: a fork of a process that has one gets another
    (processes forked from one that imported gru_mm once all got the same folder)."""
    parent = run_tag()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its tag and leave at once
        os.write(write, run_tag().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    assert child.startswith(f"{pid}-") and child != parent
    assert run_tag() == parent  # fixed for the life of a process
