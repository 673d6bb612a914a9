"""Plots logged to MLflow where a picture beats numbers: the test confusion matrix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gru_mm.data.batch import Batch  # noqa: E402


class ConfusionCounter:
    """Accumulates [true, predicted] counts from (logits, batch) pairs of a multiclass model."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self._flat = torch.zeros(num_classes * num_classes, dtype=torch.int64)

    def __call__(self, logits: torch.Tensor, batch: Batch) -> None:
        n = self.num_classes
        pred = logits.argmax(-1).cpu()
        self._flat += torch.bincount(batch.target.cpu() * n + pred, minlength=n * n)

    @property
    def counts(self) -> np.ndarray:
        return self._flat.reshape(self.num_classes, self.num_classes).numpy()


@torch.no_grad()
def confusion_counts(module: torch.nn.Module, batches: Iterable[Batch], num_classes: int) -> np.ndarray:
    """[true, predicted] counts of a multiclass module over the batches (module in eval mode)."""
    device = next(module.parameters()).device
    counter = ConfusionCounter(num_classes)
    was_training = module.training
    module.eval()
    try:
        for batch in batches:
            batch = batch.to(device)
            counter(module(batch), batch)
    finally:
        module.train(was_training)
    return counter.counts


def confusion_figure(counts: np.ndarray, class_names: Sequence[str] | None = None, title: str = "test"):
    """Rows normalised to the share of each true class, annotated with the counts."""
    n = counts.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the true class")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title=f"{title}: confusion matrix (accuracy {np.trace(counts) / max(counts.sum(), 1):.3f})")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def log_confusion_matrix(counts: np.ndarray, datamodule, mlflow_logger) -> None:
    """The test split's confusion matrix as `plots/test_confusion_matrix.png` (class names from the data)."""
    if mlflow_logger is None:
        return
    meta = datamodule.meta() if hasattr(datamodule, "meta") else {}
    fig = confusion_figure(counts, meta.get("classes"))
    mlflow_logger.experiment.log_figure(mlflow_logger.run_id, fig, "plots/test_confusion_matrix.png")
    plt.close(fig)
