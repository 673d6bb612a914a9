"""OptunaPruning with a tiny real Lightning model on the CPU, against a sqlite study."""

from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from torch.utils.data import DataLoader, TensorDataset

from gru_mm.callbacks import OptunaPruning
from hydra_plugins.gru_mm_optuna_sweeper._storage import PRUNER_ATTR


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True) + 5.0), batch_size=8)


def fit(callback, epochs=3, **trainer_kwargs):
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(Tiny(), loader(), loader())
    return trainer


def study_with_history(tmp_path: Path, past_loss: float) -> tuple[str, optuna.Study, int]:
    """A study whose 3 finished trials reported `past_loss` at each epoch, and one RUNNING trial."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="prune", storage=storage)
    study.set_user_attr(PRUNER_ATTR, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})
    dist = {"x": FloatDistribution(0, 1)}
    for _ in range(3):
        iv = {epoch: past_loss for epoch in range(3)}
        study.add_trial(
            create_trial(params={"x": 0.5}, distributions=dist, value=past_loss, intermediate_values=iv)
        )
    return storage, study, study.ask().number


@pytest.mark.slow
def test_a_hopeless_trial_is_pruned(tmp_path: Path):
    storage, study, number = study_with_history(tmp_path, past_loss=0.0)  # everyone else did far better
    callback = OptunaPruning("val/loss", study_name="prune", storage=storage, trial_number=number)
    with pytest.raises(optuna.TrialPruned, match=f"trial {number} pruned at epoch 0"):
        fit(callback)
    study.tell(number, state=TrialState.PRUNED)  # what the sweeper does with the raised TrialPruned
    trial = study.trials[number]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]


@pytest.mark.slow
def test_a_promising_trial_reports_every_epoch_and_finishes(tmp_path: Path):
    storage, study, number = study_with_history(tmp_path, past_loss=1e6)
    trainer = fit(OptunaPruning("val/loss", study_name="prune", storage=storage, trial_number=number))
    assert trainer.current_epoch == 3
    assert sorted(study.trials[number].intermediate_values) == [0, 1, 2]


def test_without_a_trial_the_callback_does_nothing():
    callback = OptunaPruning("val/loss")
    assert not callback.active
    fit(callback, epochs=1)


def test_a_misnamed_monitor_fails_naming_it(tmp_path: Path):
    storage, _, number = study_with_history(tmp_path, past_loss=1.0)
    with pytest.raises(ValueError, match="'val/acc' is not a logged metric"):
        fit(OptunaPruning("val/acc", study_name="prune", storage=storage, trial_number=number), epochs=1)


@pytest.mark.slow
def test_under_ddp_only_rank_0_reports_and_every_rank_stops(tmp_path: Path):
    storage, study, number = study_with_history(tmp_path, past_loss=0.0)
    callback = OptunaPruning("val/loss", study_name="prune", storage=storage, trial_number=number)
    with pytest.raises(Exception, match="pruned at epoch 0"):
        # gloo; plain ddp would re-run pytest's argv in the second process
        fit(callback, devices=2, strategy="ddp_spawn")
    assert list(study.trials[number].intermediate_values) == [0]  # pruned at the first epoch on every rank
