"""Figures logged to MLflow where a picture beats numbers: the test confusion matrix, the GRU gates over
time of a few test samples, which modality and steps their predictions rest on, and how far back
through time the gradient reaches. Drawing and logging only: `gru_mm.evaluation` computes what is drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _margins(fig, left: float, right: float, bottom: float, top: float, **spacing) -> None:
    """Fixed margins in inches around a grid of panels. Matplotlib's constrained layout would find them
    itself, but solving it took half the time of drawing a gate or attribution figure, and every training
    run draws them (about 1 s of CPU a run on a 2-core VM)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, **spacing
    )


def log_figure(mlflow_logger, fig, path: str) -> None:
    """The figure as the run's artifact `path` (a .png), then closed."""
    mlflow_logger.experiment.log_figure(mlflow_logger.run_id, fig, path)
    plt.close(fig)


def confusion_figure(counts: np.ndarray, class_names: Sequence[str] | None = None, title: str = "test"):
    """Rows normalised to the share of each true class, annotated with the counts."""
    n = counts.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
        title=f"{title}: confusion matrix (accuracy {accuracy:.3f})",
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    return fig


def log_confusion_matrix(mlflow_logger, counts: np.ndarray, class_names: Sequence[str] | None = None) -> None:
    """The test split's confusion matrix as `plots/test_confusion_matrix.png`."""
    log_figure(mlflow_logger, confusion_figure(counts, class_names), "plots/test_confusion_matrix.png")


def gates_figure(gates: dict[str, torch.Tensor], ids: Sequence[str], modality: str):
    """Rows z (update) and r (reset), a column per sample: the last layer's gate of each hidden unit
    (y) at each real step (x), 0..1. Padded steps are not drawn."""
    n = len(ids)
    width, height = max(3.2 * n + 2.2, 6.5), 5.5
    fig, axes = plt.subplots(2, n, figsize=(width, height), squeeze=False)
    _margins(fig, left=0.9, right=1.3, bottom=0.55, top=0.75, wspace=0.25, hspace=0.3)
    for row, name in enumerate(("z", "r")):
        for col in range(n):
            ax = axes[row][col]
            length = int(gates["lengths"][col])
            values = gates[name][-1, col, :length].float().cpu().numpy().T  # [H, steps]
            im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            label = "z: update" if name == "z" else "r: reset"
            ax.set(
                title=f"{ids[col]} ({length} steps)" if row == 0 else "",
                xlabel="step" if row else "",
                ylabel=f"{label}\nhidden unit" if col == 0 else "",
            )
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # the colour bar in the right margin: [left, bottom, width, height] as fractions of the figure
    fig.colorbar(im, cax=fig.add_axes((1 - 1.1 / width, 0.2, 0.15 / width, 0.6)), label="gate activation")
    meaning = "take the new candidate" if gates.get("cell") == "cho2014" else "keep the previous state"
    fig.suptitle(f"{modality}: GRU gates of the last layer (z near 1: {meaning})")
    return fig


def log_gate_plots(mlflow_logger, gates: Mapping[str, tuple[dict, Sequence[str]]]) -> list[str]:
    """`plots/gates_<modality>.png` for each {modality: (gates, sample ids)}; returns the paths logged."""
    paths = []
    for m, (g, ids) in gates.items():
        path = f"plots/gates_{m}.png"
        log_figure(mlflow_logger, gates_figure(g, ids, m), path)
        paths.append(path)
    return paths


def attribution_figure(result: dict[str, dict[str, torch.Tensor]], ids: Sequence[str]):
    """A row per modality, a column per sample: |gradient x input| of each real encoded step, titled
    with the modality's share of the sample's total."""
    modalities, n = list(result), len(ids)
    size = (max(3.2 * n + 1, 6.0), 2.2 * len(modalities) + 0.8)
    fig, axes = plt.subplots(len(modalities), n, figsize=size, squeeze=False)
    _margins(fig, left=0.8, right=0.2, bottom=0.55, top=0.65, wspace=0.3, hspace=0.55)
    for row, m in enumerate(modalities):
        for col in range(n):
            ax = axes[row][col]
            length = int(result[m]["lengths"][col])
            steps = result[m]["steps"][col, :length].cpu().numpy()
            if length:  # one filled outline, not a bar per step: 3x faster to draw at 200 steps
                ax.stairs(steps, np.arange(length + 1) - 0.5, fill=True, color=f"C{row}")
            share = float(result[m]["share"][col])
            ax.set(
                title=f"{ids[col]}: {m} {share:.0%}" if length else f"{ids[col]}: no {m}",
                xlabel="encoded step" if row == len(modalities) - 1 else "",
                ylabel="|grad x input|" if col == 0 else "",
            )
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("what each prediction rests on: gradient x input per modality and step")
    return fig


def gradient_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """Mean gradient ratio (each sample's norm over its largest) against steps before the last, a line
    per modality ({modality: (steps back, ratio)}), on a log scale where vanishing gradients fall as a
    straight line."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for k, (m, (back, ratio)) in enumerate(curves.items()):
        shown = ratio > 0
        if shown.any():
            ax.plot(back[shown], ratio[shown], color=f"C{k}", label=m)
    ax.set(
        yscale="log",
        xlabel="encoded steps before the sequence's last step",
        ylabel="|gradient| / its largest in the sample",
        title="how far back through time the gradient reaches\n"
        "(mean over the test split; a steep fall means vanishing gradients)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.lines:
        ax.legend()
    return fig


def log_attribution_plots(
    mlflow_logger,
    result: dict[str, dict[str, torch.Tensor]],
    ids: Sequence[str],
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    """`plots/attribution.png` of the samples `ids` (`result`: their attributions, in that order) and
    `plots/gradient_through_time.png` of the curves."""
    log_figure(mlflow_logger, attribution_figure(result, ids), "plots/attribution.png")
    log_figure(mlflow_logger, gradient_figure(curves), "plots/gradient_through_time.png")
