"""Config helpers: resolvers, early validation (before any data is read), flattening."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from gru_mm.paths import PROJECT_ROOT, stem_or
from gru_mm.schema import register_schemas


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def register_resolvers() -> None:
    """What composing conf/ needs first: its resolver and the schemas its defaults lists name."""
    if not OmegaConf.has_resolver("gru_mm_root"):
        OmegaConf.register_new_resolver("gru_mm_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("gru_mm_stem"):  # the default experiment name: the data file's stem
        OmegaConf.register_new_resolver("gru_mm_stem", stem_or)
    register_schemas()


def _check_bounds(node: Any, path: str) -> None:
    """Every structured node (see gru_mm.schema) against its fields' bounds and choices; Hydra checked the
    types as it composed."""
    if isinstance(node, DictConfig | ListConfig) and (node._is_none() or node._is_missing()):
        return
    if isinstance(node, DictConfig):
        schema = OmegaConf.get_type(node)
        fields = (
            {f.name: f.metadata for f in dataclasses.fields(schema)}
            if dataclasses.is_dataclass(schema)
            else {}
        )
        for k in node:
            key = f"{path}.{k}" if path else str(k)
            bounds = fields.get(str(k)) or {}
            if any(v is not None for v in bounds.values()):
                try:
                    value = node[k]
                except Exception as err:  # an interpolation whose value does not fit the field's type
                    raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from err
                if value is not None:
                    _check_value(key, value, **bounds)
            _check_bounds(node._get_node(k), key)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            _check_bounds(node._get_node(i), f"{path}[{i}]")


def _check_value(
    key: str,
    value: Any,
    ge: float | None,
    le: float | None,
    lt: float | None,
    choices: tuple[str, ...] | None,
) -> None:
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if ge is not None and value < ge:
        raise ConfigError(f"{key} must be >= {ge}, got {value!r}")
    if le is not None and value > le:
        raise ConfigError(f"{key} must be <= {le}, got {value!r}")
    if lt is not None and value >= lt:
        raise ConfigError(f"{key} must be < {lt}, got {value!r}")


def _check_targets(node: Any, path: str) -> None:
    """Every `_target_` must import, so a typo fails now rather than after data loading."""
    if isinstance(node, DictConfig | ListConfig) and (node._is_none() or node._is_missing()):
        return  # a typed field holding null or ???
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if target is not None:
            module_name, _, attr = str(target).rpartition(".")
            try:
                if not hasattr(importlib.import_module(module_name), attr):
                    raise ImportError(attr)
            except ImportError as err:
                raise ConfigError(
                    f"{path or '<root>'}._target_ = {target!r} cannot be imported ({err})"
                ) from err
        for k in node:
            _check_targets(node._get_node(k), f"{path}.{k}" if path else str(k))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_targets(item, f"{path}[{i}]")


def check_config(cfg: DictConfig) -> None:
    """Fail fast, naming the key, on values that cannot work. Reads no data."""
    try:
        OmegaConf.resolve(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)))
    except Exception as err:  # an interpolation that cannot resolve
        raise ConfigError(f"config does not resolve: {err}") from err
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    _check_bounds(cfg, "")
    low, high = (OmegaConf.select(cfg, f"lr_find.{k}", default=None) for k in ("min_lr", "max_lr"))
    if low is not None and high is not None and low >= high:
        raise ConfigError(f"lr_find.min_lr={low} must be below lr_find.max_lr={high}")
    weights = OmegaConf.select(cfg, "loss.class_weights", default=None)
    if (
        weights is not None
        and weights != "balanced"
        and not (
            isinstance(weights, ListConfig)
            and len(weights) > 0
            and all(isinstance(w, int | float) and not isinstance(w, bool) and w > 0 for w in weights)
        )
    ):
        raise ConfigError(
            f"loss.class_weights must be null, balanced or a list of positive numbers, got {weights!r}"
        )
    _check_targets(cfg, "")
    check_trainer(cfg)


def check_trainer(cfg: DictConfig) -> None:
    """Build the configured Lightning Trainer once, without logger or callbacks, so that what Lightning
    refuses (an accelerator this machine lacks, a bad precision, devices or strategy) fails now, naming
    the key, before any data is read. Building one reads no data, starts no process and writes no file."""
    node = cfg.get("trainer")
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    import torch

    accelerator = str(node.get("accelerator", "auto")).lower()
    if (
        accelerator in ("gpu", "cuda")
        and not torch.cuda.is_available()
        and not (accelerator == "gpu" and torch.backends.mps.is_available())
    ):
        raise ConfigError(
            f"trainer.accelerator={accelerator} needs a GPU and torch finds none on this machine "
            "(torch.cuda.is_available() is False): train with trainer=cpu"
        )
    # Lightning takes these and fails (or flips the gradient) only once training runs
    accumulate = node.get("accumulate_grad_batches", 1)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches must be an integer >= 1, got {accumulate!r}")
    clip = node.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float) or not clip >= 0):
        raise ConfigError(f"trainer.gradient_clip_val must be null or a number >= 0, got {clip!r}")

    lightning_loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in lightning_loggers]
    try:  # the real Trainer reports devices and warns; this one stays quiet
        for logger in lightning_loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hydra.utils.instantiate(node, logger=False, callbacks=[])
    except Exception as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        message = " ".join(str(cause).split())
        mentions = [
            (m.start(), k)
            for k in map(str, node)
            if (m := re.search(rf"\b{re.escape(k)}\b", message, re.IGNORECASE))
        ]
        key = min(mentions)[1] if mentions else None  # the key Lightning's message names first
        where = f"trainer.{key}={node.get(key)}" if key else "trainer"
        raise ConfigError(f"{where}: {message}") from err
    finally:
        for logger, level in zip(lightning_loggers, levels, strict=True):
            logger.setLevel(level)


def flatten(cfg: DictConfig | dict, sep: str = "/") -> dict[str, Any]:
    """Nested config -> {'model/gru/hidden_size': 64, ...} for MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{sep}{k}" if prefix else str(k))
        else:
            flat[prefix] = node

    walk(container, "")
    return flat


def silence_known_warnings() -> None:
    """Hide library warnings that are expected here and say nothing actionable to a user."""
    for message in (
        ".*overridden `transfer_batch_to_device`.*",  # on purpose: lengths must stay on the CPU
        ".*The `srun` command is available on your system but is not used.*",  # SLURM installed, not used
        ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # inside Lightning 2.6 with torch 2.11
    ):
        warnings.filterwarnings("ignore", message=message)
    # Lightning 2.6 advertises a cloud logger at every fit; runs here log to MLflow
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip:")
    )


def exit_with_status(prog: str, run: Callable[[], int], errors: tuple[type[BaseException], ...]) -> None:
    """A command's body: the errors it expects as one line on stderr, a non-zero status as exit status."""
    try:
        status = run()
    except errors as err:
        print(f"{prog}: {err}", file=sys.stderr)
        status = 1
    if status:
        raise SystemExit(status)
