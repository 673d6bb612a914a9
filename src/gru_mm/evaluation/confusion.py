"""[true, predicted] counts of a classifier over test batches."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from gru_mm.data.batch import Batch
from gru_mm.evaluation.mode import eval_mode


class ConfusionCounter:
    """Accumulates [true, predicted] counts from (logits, batch) pairs of a multiclass model, or of a
    binary one (`binary=True`: one logit per sample, positive above 0, as probability 0.5)."""

    def __init__(self, num_classes: int, binary: bool = False):
        self.binary = binary
        self.num_classes = 2 if binary else num_classes
        self._flat = torch.zeros(self.num_classes * self.num_classes, dtype=torch.int64)

    def __call__(self, logits: torch.Tensor, batch: Batch) -> None:
        n = self.num_classes
        pred = (logits.reshape(-1) > 0).long().cpu() if self.binary else logits.argmax(-1).cpu()
        self._flat += torch.bincount(batch.target.cpu().long().reshape(-1) * n + pred, minlength=n * n)

    @property
    def counts(self) -> np.ndarray:
        return self._flat.reshape(self.num_classes, self.num_classes).numpy()


@torch.no_grad()
def confusion_counts(module: torch.nn.Module, batches: Iterable[Batch], num_classes: int) -> np.ndarray:
    """[true, predicted] counts of a multiclass module over the batches (module in eval mode)."""
    device = next(module.parameters()).device
    counter = ConfusionCounter(num_classes)
    with eval_mode(module):
        for batch in batches:
            batch = batch.to(device)
            counter(module(batch), batch)
    return counter.counts
