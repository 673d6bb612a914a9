"""What a checkpoint's config may build: an allow-list of `_target_`s, checked before anything is built.

A checkpoint is data someone may have handed over. Its config is instantiated (the model, the optimizer,
the data source), so a `_target_` naming any importable callable would run it. Only the targets below
may appear; the whole config is checked first, and the first foreign one is refused, named by its key.
"""

from __future__ import annotations

import copy
import importlib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gru_mm.checkpoints.errors import CheckpointError

# Packages whose classes and functions a checkpoint may name (torch.optim covers lr_scheduler).
ALLOWED_PACKAGES = ("gru_mm", "torch.optim", "torch.nn", "torchvision.models")
# Single names the project's own conf/ uses outside those packages (a test keeps this in step with conf/).
ALLOWED_NAMES = frozenset(
    {
        "pytorch_lightning.Trainer",
        "pytorch_lightning.callbacks.ModelCheckpoint",
        "pytorch_lightning.callbacks.EarlyStopping",
        "pytorch_lightning.callbacks.LearningRateMonitor",
        "pytorch_lightning.loggers.CSVLogger",
        "pytorch_lightning.strategies.DDPStrategy",
        "datetime.timedelta",
    }
)


def _package_of(target: str) -> str | None:
    return next((p for p in ALLOWED_PACKAGES if target == p or target.startswith(p + ".")), None)


def _located(target: str) -> Any:
    """The object `target` names, walked the way Hydra walks it, or None when it leaves its own name:
    a module reached through another module's attribute (`torch.nn.functional.torch.os`) is an alias
    that would smuggle any module in under an allowed prefix."""
    parts = target.split(".")
    obj, depth = None, 0
    for depth in range(len(parts), 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:depth]))
            break
        except ImportError:
            continue
    if obj is None:
        return None
    for i in range(depth, len(parts)):
        obj = getattr(obj, parts[i], None)
        if obj is None or (isinstance(obj, types.ModuleType) and obj.__name__ != ".".join(parts[: i + 1])):
            return None
    return obj


def allowed(target: Any, extra: tuple[str, ...] = ()) -> bool:
    """Whether a checkpoint's config may name `target`; `extra`: packages the loading command trusts too."""
    if not isinstance(target, str) or not target:
        return False
    if not all(p.isidentifier() and not p.startswith("_") for p in target.split(".")):
        return False  # no dunders: `x.__class__.__subclasses__` and friends reach anything
    if target in ALLOWED_NAMES:
        return True
    package = _package_of(target) or next(
        (p for p in extra if target == p or target.startswith(p + ".")), None
    )
    if package is None:
        return False
    obj = _located(target)
    # the object must be defined in that package, not imported into it (`gru_mm.x.instantiate`)
    home = getattr(obj, "__module__", None) or ""
    return obj is not None and callable(obj) and (home == package or home.startswith(package + "."))


def _walk(node: Any, path: str, where: str, extra: tuple[str, ...]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "_target_" and not allowed(value, extra):
                raise CheckpointError(
                    f"{where}: its config names {here} = {value!r}, "
                    "which a checkpoint may not build (allowed: "
                    f"{', '.join(p + '.*' for p in (*ALLOWED_PACKAGES, *extra))} and the project's own conf/ "
                    "targets; trust a package of your own with trusted_targets=[package]); "
                    "the checkpoint is refused unloaded"
                )
            _walk(value, here, where, extra)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]", where, extra)
    elif isinstance(node, str) and "${" in node:  # saved configs are resolved: none is left legitimately
        raise CheckpointError(
            f"{where}: its config holds an interpolation at {path} ({node!r}); "
            "saved configs are resolved, so the checkpoint is refused unloaded"
        )


def check_config(config: Any, where: str | Path, extra: tuple[str, ...] = ()) -> None:
    """Refuse (CheckpointError naming the key) a saved config that names anything off the allow-list
    (plus `extra`, the packages the loading command itself trusts: never read from the checkpoint)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{where}: not a gru-mm checkpoint (its config is not a mapping)")
    _walk(config, "", str(where), tuple(extra))


def _set_trust_pickle(node: Any, value: bool) -> None:
    if isinstance(node, dict):
        for key in node:
            if key == "trust_pickle":
                node[key] = value
            else:
                _set_trust_pickle(node[key], value)
    elif isinstance(node, list):
        for item in node:
            _set_trust_pickle(item, value)


def trusted_config(
    config: Any, where: str | Path, trust_pickle: bool = False, extra: tuple[str, ...] = ()
) -> DictConfig:
    """A checkpoint's saved config, checked (see `check_config`), as a DictConfig ready to instantiate.

    `trust_pickle` and `extra` (`trusted_targets`) are the loading command's own decisions: a checkpoint
    cannot vouch for a pickle it names, nor for the code it names.
    """
    check_config(config, where, extra)
    plain = copy.deepcopy(OmegaConf.to_container(config) if isinstance(config, DictConfig) else dict(config))
    _set_trust_pickle(plain, trust_pickle is True)
    return OmegaConf.create(plain)
