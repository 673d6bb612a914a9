"""Shared by the model tests: compose the real training config and build the model or module from it."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gru_mm.config import register_resolvers
from gru_mm.models.build import build_module
from gru_mm.paths import CONF_DIR

register_resolvers()
SHAPES = {"audio": (40,), "video": (1, 8, 8)}  # avdigits' per-step feature shapes


def _options(group: str) -> list[str]:
    """The options of a conf/model/ group, the model's default first: a new yaml file is tested too."""
    names = sorted(p.stem for p in (CONF_DIR / "model" / group).glob("*.yaml"))
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "default.yaml").defaults)
    default = next((d[group] for d in defaults if isinstance(d, dict) and group in d), None)
    return sorted(names, key=lambda n: n != default)


FUSIONS = _options("fusion")
ENCODERS = _options("encoder")


def compose_train(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/x", *overrides])


def build_model(*overrides: str):
    """The MultimodalGRU of the composed config, 10 classes, seeded weights."""
    cfg = compose_train(*overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model, num_classes=10)


def fit_on_batches(module, batches: list, root, max_epochs: int = 1):
    """A quiet CPU Lightning fit of `module` over ready-made batches (no validation, logger or
    checkpoints); returns the trainer."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda b: b))
    return trainer


def build_test_module(*overrides: str):
    """The LightningModule of the composed config, 10 classes, seeded weights."""
    cfg = compose_train(*overrides)
    torch.manual_seed(0)
    return build_module(cfg, num_classes=10)
