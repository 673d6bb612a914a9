"""Which augmentation each modality kind gets: `data.augment.<kind>`'s settings -> one sequence's
transform."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from gru_mm.data.augment.audio import audio_augment
from gru_mm.data.augment.batch import BatchAugment
from gru_mm.data.augment.frames import frames_augment
from gru_mm.data.augment.series import series_augment
from gru_mm.data.augment.text import WordDropout


def text_augment(settings: Mapping[str, Any], step_shape: tuple[int, ...]) -> nn.Module | None:
    return WordDropout(settings["word_dropout"]) if settings["word_dropout"] else None


# kind name (gru_mm.data.kinds) -> (its settings, its step shape) -> transform of one sequence, or None
KINDS: dict[str, Callable[[Mapping[str, Any], tuple[int, ...]], nn.Module | None]] = {
    "audio": audio_augment,
    "frames": frames_augment,
    "series": series_augment,
    "text": text_augment,
}


def build_augment(
    settings: Mapping[str, Any] | DictConfig | None,
    kinds: Mapping[str, str],
    step_shapes: Mapping[str, tuple[int, ...]],
    seed: int,
) -> BatchAugment | None:
    """The augmentation of a training batch whose modalities are of `kinds` ({modality: kind name}); None
    when no modality gets any (every strength 0, as in conf/data/augment/none.yaml). A kind without
    settings (one a user registered) is left as it is."""
    if settings is None:
        return None
    if isinstance(settings, DictConfig):
        settings = OmegaConf.to_container(settings, resolve=True)
    transforms = {}
    for modality, kind in kinds.items():
        if kind in KINDS and settings.get(kind) is not None:
            transform = KINDS[kind](settings[kind], tuple(step_shapes[modality]))
            if transform is not None:
                transforms[modality] = transform
    return BatchAugment(transforms, seed) if transforms else None
