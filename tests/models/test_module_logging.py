"""The module's epoch-level metrics: handed to Lightning once an epoch, yet the means of every step."""

import pytest

from gru_mm.models import balance
from models.model_testlib import build_test_module, fit_on_batches
from models.test_balance import DETERMINISTIC, constructed_batch


def test_epoch_metrics_are_weighted_means_of_every_step_with_two_log_calls_per_later_step(
    tmp_path, monkeypatch
):
    module = build_test_module(*DETERMINISTIC)
    batches = [constructed_batch(8, seed) for seed in range(4)]
    steps = []  # per training step: (audio head's loss, samples with audio)

    def recording(loss_fn, outputs, present, target, weights):
        losses = original(loss_fn, outputs, present, target, weights)
        steps.append((float(losses.losses["audio"].detach()), int(present["audio"].sum())))
        return losses

    original = balance.unimodal_losses
    monkeypatch.setattr(balance, "unimodal_losses", recording)
    calls = []
    log = module.log
    monkeypatch.setattr(module, "log", lambda name, *a, **k: (calls.append(name), log(name, *a, **k))[1])
    trainer = fit_on_batches(module, batches, tmp_path)
    assert len(steps) == 4 and steps[0][1] == 7  # the first sample of each batch lacks audio
    # the first step registers loss, acc, f1 and each modality's loss, acc and f1; later steps log only
    # the per-step values: the loss and the gradient norm
    per_step = [c for c in calls if c != "train/padding_ratio"]  # (logged at the epoch's end)
    assert per_step[:10].count("train/grad_norm") == 1 and len(per_step) == 10 + 2 * 3
    assert sorted(per_step[10:]) == sorted(["train/grad_norm", "train/loss"] * 3)
    weighted = sum(loss * max(n, 1) for loss, n in steps) / sum(max(n, 1) for _, n in steps)
    assert float(trainer.callback_metrics["train_modality/audio/loss"]) == pytest.approx(weighted, rel=1e-6)
    assert {"train/acc", "train/f1", "train_modality/video/acc", "train_modality/video/f1"} <= set(
        trainer.callback_metrics
    )
