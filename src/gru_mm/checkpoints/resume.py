"""A resumed run's config: the checkpoint's own, never silently mixed with a different command line.

The checkpoint holds the config its run was started with (resolved). Resuming with `ckpt_path=last` alone
continues that run as it was. A command line that sets keys to other values than the checkpoint's is
refused, naming them, unless `resume_overrides=allow` asks for exactly that mix (a longer run, say).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from gru_mm.checkpoints.trust import trusted_config
from gru_mm.config import ConfigError, flatten

MODES = ("refuse", "allow")
ALWAYS_CURRENT = (
    "ckpt_path",
    "resume_overrides",
    "trusted_targets",
)  # about this command, not about the run it continues
REMOVED = "<removed>"


def command_line_changes(cfg: DictConfig) -> dict[str, Any]:
    """{key: value} for every key whose value this command's overrides changed from conf/'s defaults."""
    if not HydraConfig.initialized() or not HydraConfig.get().overrides.task:
        return {}
    base = hydra.compose(config_name=HydraConfig.get().job.config_name, overrides=[])
    now, before = flatten(cfg, sep="."), flatten(base, sep=".")
    changes = {k: v for k, v in now.items() if k not in before or before[k] != v}
    changes |= {k: REMOVED for k in before if k not in now}
    return {k: v for k, v in changes.items() if k.split(".")[0] not in ALWAYS_CURRENT}


def resumed_config(cfg: DictConfig, saved: Any, where: str | Path) -> DictConfig:
    """The config to resume with: the checkpoint's (checked against the allow-list first), plus this
    command's `ckpt_path`; command-line values that contradict it are refused, or with
    `resume_overrides=allow` applied on top."""
    mode = cfg.get("resume_overrides") or "refuse"
    if mode not in MODES:
        raise ConfigError(f"resume_overrides={mode!r} must be one of {', '.join(MODES)}")
    trust_pickle = OmegaConf.select(cfg, "data.trust_pickle", default=False)  # this command's own decision
    extra = tuple(cfg.get("trusted_targets") or ())  # this command's own decision, like trust_pickle
    resumed = trusted_config(saved, where, trust_pickle=trust_pickle, extra=extra)
    kept = flatten(resumed, sep=".")
    contradicting = {k: v for k, v in command_line_changes(cfg).items() if kept.get(k, REMOVED) != v}
    if contradicting and mode != "allow":
        listed = "; ".join(
            f"{k}={v!r} (the checkpoint has {kept.get(k, REMOVED)!r})"
            for k, v in sorted(contradicting.items())
        )
        raise ConfigError(
            f"ckpt_path={where}: a resumed run keeps its checkpoint's config, and this command "
            f"line contradicts it: {listed}; drop those overrides, or add resume_overrides=allow "
            "to apply them to the resumed run"
        )
    with open_dict(resumed):
        for key, value in contradicting.items():
            if value == REMOVED:
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(resumed, parent) if parent else resumed
                node.pop(leaf, None)
            else:
                OmegaConf.update(resumed, key, value, force_add=True)
        for key in ALWAYS_CURRENT:
            resumed[key] = cfg.get(key)
    return resumed
