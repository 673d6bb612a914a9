"""A resumed run takes its config from the checkpoint; `ckpt_path=last` takes unfinished runs only."""

from __future__ import annotations

import os

import pytest
import torch
from faults_testlib import FAST, metric_history, run, train_runs

from gru_mm.checkpoints import CheckpointError, find_last, mark_finished


def test_last_means_the_newest_unfinished_run_for_resuming_and_the_newest_run_otherwise(tmp_path):
    def run_folder(name: str, age: int, finished: bool = False):
        last = tmp_path / name / "checkpoints/last.ckpt"
        last.parent.mkdir(parents=True)
        torch.save({"epoch": 0, "gru_mm": {"experiment_name": "exp"}}, last)
        os.utime(last, (1_000_000 - age, 1_000_000 - age))
        if finished:
            mark_finished(last.parent)
        return last

    older, newer = run_folder("older", age=20), run_folder("newer", age=10, finished=True)
    run_folder("other", age=0)  # newest, but another experiment's (rewritten below)
    torch.save({"epoch": 0, "gru_mm": {"experiment_name": "other"}}, tmp_path / "other/checkpoints/last.ckpt")
    assert find_last(tmp_path, "exp", unfinished_only=True) == older  # the finished one is skipped
    assert find_last(tmp_path, "exp") == newer  # evaluating: the newest, finished or not
    with pytest.raises(CheckpointError, match="no unfinished run of experiment 'nope'"):
        find_last(tmp_path, "nope", unfinished_only=True)


@pytest.mark.slow
def test_resume_keeps_the_checkpoints_config_and_refuses_contradictions_unless_allowed(tmp_path):
    root = f"paths.root={tmp_path}"
    trained = run("gru-mm-train", *FAST, root)  # one epoch, finished
    assert trained.returncode == 0, trained.stderr[-3000:]
    (ckpt_dir,) = tmp_path.glob("logs/train/runs/*/checkpoints")
    last = ckpt_dir / "last.ckpt"
    assert (ckpt_dir / "finished").is_file()

    refused = run("gru-mm-train", *FAST, f"ckpt_path={last}", "trainer.max_epochs=2", root)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"gru-mm-train: ckpt_path={last}: a resumed run keeps its checkpoint's config"), (
        line
    )
    assert "trainer.max_epochs=2 (the checkpoint has 1)" in line and "resume_overrides=allow" in line

    nothing = run("gru-mm-train", *FAST, "ckpt_path=last", root)
    assert nothing.returncode == 1
    assert "ckpt_path=last: no unfinished run of experiment 'avdigits'" in nothing.stderr
    assert "(1 finished run(s) skipped: give ckpt_path=PATH to continue one)" in nothing.stderr

    # None of FAST's overrides: the model (hidden size 16, not conf's 64), data and trainer come from the
    # checkpoint, or its weights would not even load; the one new value is allowed explicitly.
    longer = run("gru-mm-train", f"ckpt_path={last}", "trainer.max_epochs=2", "resume_overrides=allow", root)
    assert longer.returncode == 0, longer.stderr[-3000:]
    (resumed,) = train_runs(tmp_path)
    assert resumed.info.status == "FINISHED"
    assert [step for step, _ in metric_history(tmp_path, resumed.info.run_id, "val/acc")] == [1, 3]
