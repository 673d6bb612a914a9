"""Training-time augmentation of collated batches (`data.augment`, conf/data/augment/).

One small transform per modality kind (`KINDS`), applied to each sequence's real steps only, seeded from
the run's seed, on the device the batch is on (`BatchAugment`). Nothing here reads or writes padding.
"""

from gru_mm.data.augment.batch import BatchAugment
from gru_mm.data.augment.kinds import KINDS, build_augment
from gru_mm.data.augment.layout import TimeLast
from gru_mm.data.augment.series import Jitter
from gru_mm.data.augment.text import WordDropout

__all__ = ["KINDS", "BatchAugment", "Jitter", "TimeLast", "WordDropout", "build_augment"]
