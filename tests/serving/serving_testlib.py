"""A small trained-looking checkpoint (random weights, avdigits shapes) and samples for it."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from gru_mm.models.build import build_module
from gru_mm.serving.predictor import SavedData
from models.model_testlib import SHAPES, compose_train

CLASSES = [f"c{i}" for i in range(10)]
TEXT = ["<pad>", "<unk>", "hello", "world"]


def meta(**extra):
    shapes = {m: list(s) for m, s in SHAPES.items()}
    return {
        "task": "multiclass",
        "num_classes": 10,
        "classes": CLASSES,
        "vocab": {},
        "feature_shapes": shapes,
    } | extra


def write_checkpoint(path, data_meta, *overrides):
    """A checkpoint as training writes it (config, data meta, weights); returns the module in eval mode."""
    cfg = compose_train(*overrides)
    torch.manual_seed(0)
    module = build_module(cfg, datamodule=SavedData(data_meta))
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.save(
        {"gru_mm": {"config": config}, "gru_mm_data": data_meta, "state_dict": module.state_dict()}, path
    )
    return module.eval()


def samples(n=7, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = {"audio": rng.normal(size=(int(rng.integers(1, 30)), 40)).astype(np.float32)}
        if i % 3:  # every third sample has no video: an absent modality
            s["video"] = rng.random((int(rng.integers(1, 9)), 1, 8, 8)).astype(np.float32)
        out.append(s)
    return out
