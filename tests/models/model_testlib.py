"""Shared by the model tests: compose the real training config and build the model or module from it."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from gru_mm.config import register_resolvers
from gru_mm.models.build import build_module
from gru_mm.paths import CONF_DIR

register_resolvers()
SHAPES = {"audio": (40,), "video": (1, 8, 8)}  # avdigits' per-step feature shapes
FUSIONS = ["late", "attention", "tensor", "lmf", "early", "event"]


def compose_train(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/x", *overrides])


def build_model(*overrides: str):
    """The MultimodalGRU of the composed config, 10 classes, seeded weights."""
    cfg = compose_train(*overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model, num_classes=10)


def build_test_module(*overrides: str):
    """The LightningModule of the composed config, 10 classes, seeded weights."""
    cfg = compose_train(*overrides)
    torch.manual_seed(0)
    return build_module(cfg, num_classes=10)
