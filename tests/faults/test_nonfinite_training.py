"""A NaN gradient or NaN weights in a real `gru-mm-train` run (injected by fault_injection's callbacks): the
step is skipped and counted, or the run stops, as `nonfinite_grad.action` says, and no checkpoint on disk
ever holds a non-finite weight."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from faults_testlib import checkpoints_under, metric_history, run, train_runs
from torch import nn

from gru_mm.models.module import SequenceClassifier, nonfinite_tensors

# 4 training batches per epoch (global steps 4e..4e+3 in epoch e), 1 validation batch, no test.
QUICK = [
    "debug=smoke",
    "data.source.n_train=32",
    "data.source.n_val=16",
    "data.source.n_test=16",
    "data.batch_size=8",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "model.gru.hidden_size=16",
    "test=false",
    "log_model=false",
    "~callbacks.system_metrics",
]


def nan_gradient_at(*steps: int) -> list[str]:
    return [
        "+callbacks.nan._target_=fault_injection.NanGradientAt",
        f"+callbacks.nan.steps=[{','.join(map(str, steps))}]",
    ]


def assert_all_checkpoints_finite(root: Path) -> list[Path]:
    paths = checkpoints_under(root)
    assert paths, "no checkpoint was written"
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert not nonfinite_tensors(state), f"{path} holds non-finite weights"
    return paths


def epoch_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


@pytest.mark.slow
def test_skip_leaves_the_weights_finite_and_counts_the_skipped_steps(tmp_path):
    result = run(
        "gru-mm-train",
        *QUICK,
        f"paths.root={tmp_path}",
        "trainer.max_epochs=3",
        "nonfinite_grad.action=skip",
        *nan_gradient_at(1, 5),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logged = result.stdout + result.stderr
    assert "skipped training step at epoch 0, step 1: the gradient norm is nan" in logged
    assert "skipped training step at epoch 1, step 5" in logged
    paths = assert_all_checkpoints_finite(tmp_path)
    assert epoch_of(next(p for p in paths if p.name == "last.ckpt")) == 2  # training went on to the end
    (mlflow_run,) = train_runs(tmp_path)
    skipped = metric_history(tmp_path, mlflow_run.info.run_id, "train/skipped_steps")
    assert (
        skipped[0] == (1, 1.0) and max(v for _, v in skipped) == 2.0
    )  # both steps counted, logged as they happen


@pytest.mark.slow
def test_stop_ends_the_run_at_the_first_nan_gradient_keeping_its_last_finite_checkpoint(tmp_path):
    result = run(
        "gru-mm-train", *QUICK, f"paths.root={tmp_path}", "trainer.max_epochs=3", *nan_gradient_at(5)
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("gru-mm-train: the gradient norm is nan at epoch 1, step 5: "), line
    assert "nonfinite_grad.action=skip" in line
    last = Path(line.split("the last checkpoint is kept: ")[1])
    assert last.name == "last.ckpt" and epoch_of(last) == 0
    assert_all_checkpoints_finite(tmp_path)


@pytest.mark.slow
def test_non_finite_weights_are_never_written_and_endless_skips_still_stop(tmp_path):
    # The update of epoch 1's last batch "overflows": epoch 1's checkpoint is refused, every later step
    # is non-finite and skipped, and two of them in a row end the run.
    result = run(
        "gru-mm-train",
        *QUICK,
        f"paths.root={tmp_path}",
        "trainer.max_epochs=4",
        "nonfinite_grad.action=skip",
        "nonfinite_grad.max_skips_in_a_row=2",
        "+callbacks.nan._target_=fault_injection.NanWeightsAfter",
        "+callbacks.nan.epoch=1",
        "+callbacks.nan.batch=3",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        "not writing a checkpoint at epoch 1, step 8: non-finite weights in net."
        in result.stdout + result.stderr
    )
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "gru-mm-train: 2 training steps in a row had a non-finite gradient (the last at "
        "epoch 2, step 9): the run has diverged"
    ), line
    paths = assert_all_checkpoints_finite(tmp_path)
    assert {epoch_of(p) for p in paths} == {0}  # last.ckpt and the best are still epoch 0's


def test_the_module_refuses_to_write_non_finite_weights_whoever_saves():
    """The last line of defence, for a plain ModelCheckpoint or a hand-made trainer.save_checkpoint."""
    module = SequenceClassifier(
        nn.Linear(3, 2), num_classes=2, optimizer=functools.partial(torch.optim.SGD, lr=0.1)
    )
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)  # finite: fine
    with torch.no_grad():
        module.net.bias[1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite weights in net\.bias"):
        module.on_save_checkpoint({"state_dict": module.state_dict()})


def test_nonfinite_grad_action_is_checked():
    from gru_mm.config import ConfigError

    with pytest.raises(ConfigError, match="nonfinite_grad.action must be one of stop, skip, got 'ignore'"):
        SequenceClassifier(
            nn.Linear(3, 2),
            num_classes=2,
            optimizer=functools.partial(torch.optim.SGD, lr=0.1),
            nonfinite_grad="ignore",
        )
