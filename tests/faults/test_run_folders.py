"""Two runs started in the same second get different folders (they would share last.ckpt otherwise)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from faults_testlib import REPO, cli_env

# Imports first, says so, then waits for the go on stdin: both runs compose their config in the same second.
STARTER = """
import sys
from gru_mm.train import main
print("ready", flush=True)
sys.stdin.readline()
sys.argv = ["gru-mm-train", *sys.argv[1:]]
main()
"""


def _start_two(root):
    """Two runs that start composing at the same moment; their run folders' names."""
    # seed=-1 fails the config check, after Hydra has made the run folder: the folder is all this needs
    args = [f"paths.root={root}", "seed=-1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, *args],
            cwd=REPO,
            env=cli_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:  # both have imported gru_mm.train (seconds, more under load); warnings may come first
        seen = []
        while not seen or seen[-1].strip() != "ready":
            seen.append(p.stdout.readline())
            assert seen[-1], "".join(seen)  # it ended before it was ready
    for p in procs:  # then go, together
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert all("gru-mm-train: seed must be" in out for out in outputs), outputs
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
