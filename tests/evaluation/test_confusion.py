"""Confusion counts: equal to scikit-learn's, binary logits thresholded at 0."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from gru_mm.data.batch import Batch
from gru_mm.evaluation.confusion import ConfusionCounter, confusion_counts


class FixedPredictions(torch.nn.Module):
    """Predicts the class stored in each sample id, whatever the input."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        pred = torch.tensor([int(i) for i in batch.ids])
        return torch.nn.functional.one_hot(pred, self.num_classes).float() + 0 * self.dummy


def test_counts_match_sklearn():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    batches = [
        Batch([str(p) for p in pred[i : i + 16]], torch.as_tensor(true[i : i + 16]), {})
        for i in range(0, 50, 16)
    ]
    counts = confusion_counts(FixedPredictions(4), batches, 4)
    np.testing.assert_array_equal(counts, confusion_matrix(true, pred, labels=range(4)))


def test_binary_confusion_counts_threshold_the_logit_at_zero():
    counter = ConfusionCounter(1, binary=True)
    batch = Batch(["a", "b", "c", "d"], torch.tensor([0.0, 1.0, 1.0, 0.0]), {})
    counter(torch.tensor([-2.0, 0.5, -0.1, 3.0]), batch)
    assert counter.counts.tolist() == [[1, 1], [1, 1]]  # rows: true 0, 1; columns: predicted 0, 1
