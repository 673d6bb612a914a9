"""WarmupCosineLR: linear warmup, then cosine decay per step; resumable; told the run's length."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import pytest
import torch

from gru_mm.config import ConfigError
from gru_mm.models.schedules import WarmupCosineLR, run_length


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _rates(scheduler: WarmupCosineLR, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_rises_linearly_over_the_warmup_then_follows_a_cosine_down_to_eta_min():
    scheduler = WarmupCosineLR(_optimizer(0.1), steps_per_epoch=4, T_max=3, warmup_epochs=1, eta_min=1e-3)
    rates = _rates(scheduler, 14)
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # one epoch of 4 steps up to lr
    # then 8 steps of cosine from lr to eta_min: halfway (step 4 + 4) is their mean
    assert rates[8] == pytest.approx(1e-3 + (0.1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a > b for a, b in zip(rates[4:12], rates[5:12], strict=False))
    assert rates[12:] == pytest.approx([1e-3, 1e-3])  # past T_max it stays at eta_min


def test_a_resumed_schedule_continues_where_it_stopped():
    make = functools.partial(WarmupCosineLR, steps_per_epoch=5, T_max=4, warmup_epochs=1.5)
    whole = _rates(make(_optimizer()), 20)
    first = make(_optimizer())
    _rates(first, 7)
    optimizer = _optimizer()
    optimizer.load_state_dict(first.optimizer.state_dict())
    resumed = make(optimizer, last_epoch=6)
    resumed.load_state_dict(first.state_dict())
    assert _rates(resumed, 13) == pytest.approx(whole[7:])


def test_run_length_gives_steps_per_epoch_only_to_schedules_that_ask_for_it():
    trainer = SimpleNamespace(max_epochs=8, estimated_stepping_batches=200)
    factory = functools.partial(WarmupCosineLR, T_max=8)
    assert run_length(factory, trainer, "step") == {"steps_per_epoch": 25}
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=8)
    assert run_length(cosine, trainer, "epoch") == {}
    with pytest.raises(ConfigError, match="set scheduler_interval=step"):
        run_length(factory, trainer, "epoch")
    # no epoch limit (lr_find's trainer: max_epochs=-1): one epoch's optimiser steps
    unlimited = SimpleNamespace(
        max_epochs=-1, estimated_stepping_batches=math.inf, num_training_batches=14, accumulate_grad_batches=2
    )
    assert run_length(factory, unlimited, "step") == {"steps_per_epoch": 7}


def test_impossible_settings_are_named():
    with pytest.raises(ConfigError, match="warmup_epochs >= 0"):
        WarmupCosineLR(_optimizer(), steps_per_epoch=4, T_max=3, warmup_epochs=-1)


@pytest.mark.slow  # a Lightning fit: about 5 s of CPU
def test_the_module_steps_it_every_training_step_with_the_trainers_steps_per_epoch(tmp_path):
    from models.model_testlib import build_test_module, fit_on_batches
    from models.test_balance import constructed_batch

    module = build_test_module(
        "optimizer.lr=0.01",
        "scheduler._target_=gru_mm.models.schedules.WarmupCosineLR",
        "+scheduler.warmup_epochs=1",
        "scheduler_interval=step",
        "trainer.max_epochs=2",
    )
    rates = []
    module.on_train_batch_start = lambda batch, i: rates.append(module.optimizers().param_groups[0]["lr"])
    fit_on_batches(module, [constructed_batch(8, seed) for seed in range(3)], tmp_path, max_epochs=2)
    # 3 steps an epoch: warmup over the first 3 steps, then the cosine over the other 3, a new rate each step
    assert rates[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])
    assert rates[3] == pytest.approx(0.01) and rates[3] > rates[4] > rates[5] > 1e-5
