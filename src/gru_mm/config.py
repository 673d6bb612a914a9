"""Config helpers: resolvers, early validation (before any data is read), flattening."""

from __future__ import annotations

import importlib
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gru_mm.paths import PROJECT_ROOT


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("gru_mm_root"):
        OmegaConf.register_new_resolver("gru_mm_root", lambda: str(PROJECT_ROOT))


# (key, type, lower bound, upper bound); None bounds are open. Keys in _BELOW_UPPER exclude the upper bound.
_NUMERIC_RULES: list[tuple[str, type, float | None, float | None]] = [
    ("seed", int, 0, None),
    ("data.batch_size", int, 1, None),
    ("data.eval_batch_size", int, 1, None),
    ("data.num_workers", int, 0, None),
    ("data.pool_batches", int, 1, None),
    ("data.train_crop_steps", int, 1, None),
    ("model.gru.hidden_size", int, 1, None),
    ("model.gru.num_layers", int, 1, None),
    ("model.gru.dropout", float, 0.0, 1.0),
    ("model.head.hidden", int, 1, None),
    ("model.head.dropout", float, 0.0, 1.0),
    ("model.modality_dropout", float, 0.0, 1.0),
    ("model.fusion.dim", int, 1, None),
    ("model.fusion.attention_dim", int, 1, None),
    ("model.fusion.rank", int, 1, None),
    ("model.fusion.num_steps", int, 1, None),
    ("optimizer.lr", float, 0.0, None),
    ("optimizer.weight_decay", float, 0.0, None),
    ("trainer.max_epochs", int, -1, None),
    ("trainer.gradient_clip_val", float, 0.0, None),
    ("trainer.accumulate_grad_batches", int, 1, None),
    ("callbacks.system_metrics.interval_s", float, 0.1, None),
    ("loss.label_smoothing", float, 0.0, 1.0),
    ("lr_find.min_lr", float, 1e-12, None),
    ("lr_find.max_lr", float, 1e-12, None),
    ("lr_find.steps", int, 2, None),
]
# dropout or smoothing of 1 would leave nothing to learn from
_BELOW_UPPER = {"model.gru.dropout", "model.modality_dropout", "loss.label_smoothing"}
_BOOL_KEYS = ["data.pin_memory", "data.persistent_workers", "data.bucket", "model.gru.bidirectional",
              "lr_find.enabled"]


def _check_number(key: str, value: Any, kind: type, low: float | None, high: float | None) -> None:
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise ConfigError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be <= {high}, got {value!r}")
    if high is not None and key in _BELOW_UPPER and value == high:
        raise ConfigError(f"{key} must be < {high}, got {value!r}")


def _check_targets(node: Any, path: str) -> None:
    """Every `_target_` must import, so a typo fails now rather than after data loading."""
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if target is not None:
            module_name, _, attr = str(target).rpartition(".")
            try:
                if not hasattr(importlib.import_module(module_name), attr):
                    raise ImportError(attr)
            except ImportError as err:
                raise ConfigError(f"{path or '<root>'}._target_ = {target!r} cannot be imported ({err})") from err
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
    for key, kind, low, high in _NUMERIC_RULES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            _check_number(key, value, kind, low, high)
    for key in _BOOL_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    low, high = (OmegaConf.select(cfg, f"lr_find.{k}", default=None) for k in ("min_lr", "max_lr"))
    if low is not None and high is not None and low >= high:
        raise ConfigError(f"lr_find.min_lr={low} must be below lr_find.max_lr={high}")
    weights = OmegaConf.select(cfg, "loss.class_weights", default=None)
    if weights is not None and weights != "balanced" and not (
        isinstance(weights, ListConfig) and len(weights) > 0
        and all(isinstance(w, int | float) and not isinstance(w, bool) and w > 0 for w in weights)
    ):
        raise ConfigError(f"loss.class_weights must be null, balanced or a list of positive numbers, got {weights!r}")
    _check_targets(cfg, "")


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
    import warnings

    for message in (
        ".*overridden `transfer_batch_to_device`.*",  # on purpose: lengths must stay on the CPU
        ".*The `srun` command is available on your system but is not used.*",  # SLURM installed, not used
        ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # inside Lightning 2.6 with torch 2.11
    ):
        warnings.filterwarnings("ignore", message=message)
    # Lightning 2.6 advertises a cloud logger at every fit; runs here log to MLflow
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip:"))


def exit_with_status(prog: str, run: Callable[[], int], errors: tuple[type[BaseException], ...]) -> None:
    """A command's body: the errors it expects as one line on stderr, a non-zero status as exit status."""
    try:
        status = run()
    except errors as err:
        print(f"{prog}: {err}", file=sys.stderr)
        status = 1
    if status:
        raise SystemExit(status)
