"""Typed schemas of conf/'s own config nodes (Hydra structured configs).

Each yaml file names its schema first in its defaults list (`- /schema/model/gru/torch@_here_`), so Hydra
types every value as the file and the command line compose it (`model.gru.hidden_size=abc` and a key the
schema lacks are refused then), and `gru_mm.config.check_config` checks the bounds and choices kept in
each field's metadata before any data is read. A new key in a yaml file is refused until it is a field
here, with its type and bounds; its value and comment stay in the yaml (fields are MISSING here, not
defaulted twice).

Nodes whose `_target_` a user may swap for another library's class (trainer, scheduler, callbacks other
than ours) have no schema: those classes check their own arguments (see `check_trainer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from gru_mm.data.sources.base import STORAGES
from gru_mm.nn.gru import CELLS, PATHS, PRECISIONS
from gru_mm.nn.init import INITS


def option(
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A field whose value comes from the yaml, with bounds or choices that `check_config` enforces (None:
    any). Choices come from the constructor's own module, so they stay the ones it accepts."""
    return field(default=MISSING, metadata={"ge": ge, "le": le, "lt": lt, "choices": choices})


@dataclass
class Target:
    _target_: str = MISSING


@dataclass
class PartialTarget(Target):
    _partial_: bool = True


@dataclass
class DataLoaderOptions(Target):
    """conf/data/avdigits.yaml: gru_mm.data.datamodule.SequenceDataModule's loader settings."""

    source: Any = MISSING
    batch_size: int = option(ge=1)
    eval_batch_size: int = option(ge=1)
    num_workers: int | None = option(ge=0)
    pin_memory: bool | None = MISSING
    persistent_workers: bool = MISSING
    bucket: bool = MISSING
    pool_batches: int = option(ge=1)
    seed: int = option(ge=0)
    train_crop_steps: int | None = option(ge=1)
    augment: Any = MISSING  # conf/data/augment/: AugmentOptions
    storage: str = option(choices=STORAGES)


@dataclass
class AudioAugmentOptions:
    """data.augment.audio: SpecAugment (gru_mm.data.augment.audio)."""

    time_masks: int = option(ge=0)
    time_mask_param: int = option(ge=0)
    freq_masks: int = option(ge=0)
    freq_mask_param: int = option(ge=0)
    max_time_fraction: float = option(ge=0.0, le=1.0)


@dataclass
class FramesAugmentOptions:
    """data.augment.frames: torchvision.transforms.v2 (gru_mm.data.augment.frames)."""

    crop_scale: float = option(ge=0.01, le=1.0)
    hflip: float = option(ge=0.0, le=1.0)
    brightness: float = option(ge=0.0)
    contrast: float = option(ge=0.0)
    saturation: float = option(ge=0.0)
    hue: float = option(ge=0.0, le=0.5)
    noise_std: float = option(ge=0.0)


@dataclass
class SeriesAugmentOptions:
    """data.augment.series: time masks and jitter (gru_mm.data.augment.series)."""

    time_masks: int = option(ge=0)
    time_mask_param: int = option(ge=0)
    max_time_fraction: float = option(ge=0.0, le=1.0)
    jitter_std: float = option(ge=0.0)


@dataclass
class TextAugmentOptions:
    """data.augment.text: word dropout (gru_mm.data.augment.text)."""

    word_dropout: float = option(ge=0.0, lt=1.0)  # 1 would leave no word


@dataclass
class AugmentOptions:
    """conf/data/augment/*.yaml: training-time augmentation, one node per modality kind."""

    audio: AudioAugmentOptions = field(default_factory=AudioAugmentOptions)
    frames: FramesAugmentOptions = field(default_factory=FramesAugmentOptions)
    series: SeriesAugmentOptions = field(default_factory=SeriesAugmentOptions)
    text: TextAugmentOptions = field(default_factory=TextAugmentOptions)


@dataclass
class ManifestDataOptions(DataLoaderOptions):
    """conf/data/manifest.yaml: the loader settings plus the file to read."""

    path: str = MISSING
    on_error: str = MISSING


@dataclass
class FeaturesDataOptions(ManifestDataOptions):
    """conf/data/features.yaml: a features file may be a pickle, read only when trusted."""

    trust_pickle: bool = MISSING


@dataclass
class HeadOptions(PartialTarget):
    hidden: int = option(ge=1)
    dropout: float = option(ge=0.0, le=1.0)


@dataclass
class UnimodalHeadsOptions:
    """conf/model/default.yaml's unimodal_heads (gru_mm.models.balance.UnimodalHeads)."""

    weight: float = option(ge=0.0)
    weights: dict[str, float] = MISSING
    readout: str = MISSING  # state or mean (UnimodalHeads checks it)


@dataclass
class OGMGEOptions:
    """conf/model/default.yaml's ogm_ge (gru_mm.models.balance.GradientModulation checks score itself)."""

    enabled: bool = MISSING
    alpha: float = option(ge=1e-6)
    noise: bool = MISSING
    score: str = MISSING


@dataclass
class ModelOptions(Target):
    """conf/model/default.yaml; encoders, gru and fusion are groups with schemas of their own."""

    encoders: Any = MISSING
    gru: Any = MISSING
    fusion: Any = MISSING
    modalities: list[str] | None = MISSING
    modality_dropout: float = option(ge=0.0, lt=1.0)  # 1 would drop every modality of every sample
    head: HeadOptions = field(default_factory=HeadOptions)
    unimodal_heads: UnimodalHeadsOptions = field(default_factory=UnimodalHeadsOptions)
    ogm_ge: OGMGEOptions = field(default_factory=OGMGEOptions)
    compile: bool = MISSING


@dataclass
class GRUOptions(PartialTarget):
    """conf/model/gru/torch.yaml: gru_mm.nn.GRU (which checks them again, and which paths suit which cell)."""

    hidden_size: int = option(ge=1)
    num_layers: int = option(ge=1)
    bidirectional: bool = MISSING
    dropout: float = option(ge=0.0, lt=1.0)  # dropout of 1 leaves the next layer nothing
    cell: str = option(choices=CELLS)
    path: str = option(choices=PATHS)
    init: str = option(choices=INITS)
    l2_input_kernel: float = option(ge=0.0)
    l2_recurrent_kernel: float = option(ge=0.0)
    l2_bias: float = option(ge=0.0)
    precision: str = option(choices=PRECISIONS)
    graphs: bool = MISSING  # CUDA graphs of the padded path (gru_mm.nn.gru_graphs)


@dataclass
class AttentionFusionOptions(PartialTarget):
    dim: int = option(ge=1)
    attention_dim: int = option(ge=1)


@dataclass
class LowRankFusionOptions(PartialTarget):
    dim: int = option(ge=1)
    rank: int = option(ge=1)


@dataclass
class TensorFusionOptions(PartialTarget):
    dim: int | None = option(ge=1)


@dataclass
class EarlyFusionOptions(PartialTarget):
    num_steps: int | None = option(ge=1)


@dataclass
class EventFusionOptions(PartialTarget):
    dim: int = option(ge=1)
    step_seconds: dict[str, float] = MISSING


@dataclass
class OptimizerOptions(PartialTarget):
    """conf/train.yaml's optimizer (another optimiser's own arguments: `+optimizer.momentum=0.9`)."""

    lr: float = option(ge=0.0)
    weight_decay: float = option(ge=0.0)


@dataclass
class LossOptions:
    class_weights: Any = MISSING  # null, balanced or a list: check_config checks it
    label_smoothing: float = option(ge=0.0, lt=1.0)  # smoothing of 1 leaves no label to learn


@dataclass
class LRFindOptions:
    enabled: bool = MISSING
    min_lr: float = option(ge=1e-12)
    max_lr: float = option(ge=1e-12)
    steps: int = option(ge=2)


@dataclass
class SystemMetricsOptions(Target):
    interval_s: float = option(ge=0.1)


# ConfigStore path (under schema/) -> schema; each path mirrors the conf/ file or node it describes
SCHEMAS: dict[str, type] = {
    "data/avdigits": DataLoaderOptions,
    "data/manifest": ManifestDataOptions,
    "data/features": FeaturesDataOptions,
    "data/augment/options": AugmentOptions,
    "data/augment/audio": AudioAugmentOptions,  # the nodes inside it, named so that their bounds get tested
    "data/augment/frames": FramesAugmentOptions,
    "data/augment/series": SeriesAugmentOptions,
    "data/augment/text": TextAugmentOptions,
    "model/default": ModelOptions,
    "model/gru/torch": GRUOptions,
    "model/fusion/attention": AttentionFusionOptions,
    "model/fusion/lmf": LowRankFusionOptions,
    "model/fusion/tensor": TensorFusionOptions,
    "model/fusion/early": EarlyFusionOptions,
    "model/fusion/event": EventFusionOptions,
    "optimizer": OptimizerOptions,
    "loss": LossOptions,
    "lr_find": LRFindOptions,
    "callbacks/system_metrics": SystemMetricsOptions,
}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore as schema/<path>, where conf/'s defaults lists find them."""
    store = ConfigStore.instance()
    for path, schema in SCHEMAS.items():
        group, _, name = f"schema/{path}".rpartition("/")
        store.store(group=group, name=name, node=schema)
