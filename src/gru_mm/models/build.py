"""Config -> objects, in the order that lets bad values fail before any data is read."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gru_mm.models.module import SequenceClassifier


def build_datamodule(cfg: DictConfig):
    """Instantiating reads no data: sources load lazily in prepare_data/setup."""
    return hydra.utils.instantiate(cfg.data, _recursive_=True)


def build_module(cfg: DictConfig, num_classes: int) -> SequenceClassifier:
    net = hydra.utils.instantiate(cfg.model, num_classes=num_classes)
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return SequenceClassifier(
        net,
        num_classes=num_classes,
        optimizer=optimizer,
        scheduler=scheduler,
        scheduler_interval=cfg.get("scheduler_interval", "epoch"),
    )
