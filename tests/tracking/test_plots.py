"""The test confusion matrix: counts equal scikit-learn's, and the figure renders."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from gru_mm.data.batch import Batch
from gru_mm.tracking.plots import confusion_counts, confusion_figure


class FixedPredictions(torch.nn.Module):
    """Predicts the class stored in each sample id, whatever the input."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        pred = torch.tensor([int(i) for i in batch.ids])
        return torch.nn.functional.one_hot(pred, self.num_classes).float() + 0 * self.dummy


def test_counts_match_sklearn_and_the_figure_renders(tmp_path):
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    batches = [Batch([str(p) for p in pred[i:i + 16]], torch.as_tensor(true[i:i + 16]), {})
               for i in range(0, 50, 16)]
    counts = confusion_counts(FixedPredictions(4), batches, 4)
    np.testing.assert_array_equal(counts, confusion_matrix(true, pred, labels=range(4)))
    fig = confusion_figure(counts, ["a", "b", "c", "d"])
    fig.savefig(tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000
    assert "accuracy" in fig.axes[0].get_title()


def test_gate_figure_renders_each_sample_up_to_its_length(tmp_path):
    from gru_mm.tracking.plots import gates_figure

    z = torch.rand(1, 2, 9, 5)
    gates = {"z": z, "r": torch.rand_like(z), "lengths": torch.tensor([9, 4])}
    fig = gates_figure(gates, ["a", "b"], "audio")
    fig.savefig(tmp_path / "gates.png")
    assert (tmp_path / "gates.png").stat().st_size > 1000
    images = [ax.images[0].get_array().shape for ax in fig.axes if ax.images]
    assert images == [(5, 9), (5, 4), (5, 9), (5, 4)]  # [hidden units, real steps] per sample, z then r
    assert "a (9 steps)" in fig.axes[0].get_title()
