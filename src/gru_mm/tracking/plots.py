"""Plots logged to MLflow where a picture beats numbers: the test confusion matrix, the GRU gates over
time of a few test samples, which modality and steps their predictions rest on, and how far back
through time the gradient reaches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gru_mm.data.batch import Batch  # noqa: E402
from gru_mm.models.attribution import GradientProfile  # noqa: E402


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


GATE_SAMPLES = 3  # test samples shown per modality


def gates_figure(gates: dict[str, torch.Tensor], ids: Sequence[str], modality: str):
    """Rows z (update) and r (reset), a column per sample: the last layer's gate of each hidden unit
    (y) at each real step (x), 0..1. Padded steps are not drawn."""
    n = len(ids)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n + 1, 5.5), squeeze=False, layout="constrained")
    for row, name in enumerate(("z", "r")):
        for col in range(n):
            ax = axes[row][col]
            length = int(gates["lengths"][col])
            values = gates[name][-1, col, :length].float().cpu().numpy().T  # [H, steps]
            im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            label = "z: update" if name == "z" else "r: reset"
            ax.set(title=f"{ids[col]} ({length} steps)" if row == 0 else "", xlabel="step" if row else "",
                   ylabel=f"{label}\nhidden unit" if col == 0 else "")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=axes, label="gate activation", shrink=0.8)
    meaning = "take the new candidate" if gates.get("cell") == "cho2014" else "keep the previous state"
    fig.suptitle(f"{modality}: GRU gates of the last layer (z near 1: {meaning})")
    return fig


@torch.no_grad()
def log_gate_plots(module, datamodule, mlflow_logger, samples: int = GATE_SAMPLES) -> list[str]:
    """For models with a GRU per modality: `plots/gates_<modality>.png` from the first test samples.

    Returns the artifact paths logged (none when the model has no gates or there is no logger)."""
    net = getattr(module, "net", None)
    if mlflow_logger is None or net is None or not net.has_gates():
        return []
    from gru_mm.models.ablation import full_test_loader

    batch = next(iter(full_test_loader(datamodule)))
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    try:
        gates = net.gates(batch.to(device).inputs)
    finally:
        module.train(was_training)
    paths = []
    for m, g in gates.items():
        keep = [i for i in range(len(batch.ids)) if int(g["lengths"][i]) > 0][:samples]
        if not keep:
            continue
        picked = {"z": g["z"][:, keep], "r": g["r"][:, keep], "lengths": g["lengths"][keep], "cell": g["cell"]}
        fig = gates_figure(picked, [batch.ids[i] for i in keep], m)
        path = f"plots/gates_{m}.png"
        mlflow_logger.experiment.log_figure(mlflow_logger.run_id, fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def attribution_figure(result: dict[str, dict[str, torch.Tensor]], ids: Sequence[str]):
    """A row per modality, a column per sample: |gradient x input| of each real encoded step, titled
    with the modality's share of the sample's total."""
    modalities, n = list(result), len(ids)
    fig, axes = plt.subplots(len(modalities), n, figsize=(3.2 * n + 1, 2.2 * len(modalities) + 0.8),
                             squeeze=False, layout="constrained")
    for row, m in enumerate(modalities):
        for col in range(n):
            ax = axes[row][col]
            length = int(result[m]["lengths"][col])
            ax.bar(np.arange(length), result[m]["steps"][col, :length].cpu().numpy(), width=1.0, color=f"C{row}")
            share = float(result[m]["share"][col])
            ax.set(title=f"{ids[col]}: {m} {share:.0%}" if length else f"{ids[col]}: no {m}",
                   xlabel="encoded step" if row == len(modalities) - 1 else "",
                   ylabel="|grad x input|" if col == 0 else "")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("what each prediction rests on: gradient x input per modality and step")
    return fig


def gradient_figure(profiles: dict[str, GradientProfile], samples: int):
    """Mean gradient ratio (each sample's norm over its largest) against steps before the last, a line
    per modality, on a log scale where vanishing gradients fall as a straight line."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for k, (m, profile) in enumerate(profiles.items()):
        back, ratio = profile.curve(min_samples=max(3, samples // 20))
        shown = ratio > 0
        if shown.any():
            ax.plot(back[shown], ratio[shown], color=f"C{k}", label=m)
    ax.set(yscale="log", xlabel="encoded steps before the sequence's last step",
           ylabel="|gradient| / its largest in the sample",
           title="how far back through time the gradient reaches\n"
                 "(mean over the test split; a steep fall means vanishing gradients)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.lines:
        ax.legend()
    return fig


def log_attributions(module, datamodule, mlflow_logger, samples: int = GATE_SAMPLES) -> dict[str, float]:
    """From one gradient pass over the test split: each modality's mean share of the predictions
    (`test_attribution/<modality>/share`), `plots/attribution.png` for the first test samples, and how far
    back the gradient reaches (`test_gradient/<modality>/start_vs_peak`, `plots/gradient_through_time.png`).
    Returns the metrics logged."""
    from gru_mm.models.ablation import full_test_loader
    from gru_mm.models.attribution import attributions

    net = getattr(module, "net", None)
    if mlflow_logger is None or net is None or not hasattr(net, "encoders"):
        return {}
    device = next(module.parameters()).device
    task = getattr(module, "task", "multiclass")
    was_training = module.training
    module.eval()
    sums: dict[str, float] = {}
    profiles: dict[str, GradientProfile] = {}
    count, first = 0, None
    try:
        for batch in full_test_loader(datamodule):
            batch = batch.to(device)
            result = attributions(net, batch.inputs, task)
            for m, r in result.items():
                sums[m] = sums.get(m, 0.0) + float(r["share"].sum())
                profiles.setdefault(m, GradientProfile()).add(r["grad"], r["lengths"])
            count += len(batch.ids)
            first = first or (batch.ids, result)
    finally:
        module.train(was_training)
    metrics = {f"test_attribution/{m}/share": v / max(count, 1) for m, v in sums.items()}
    metrics |= {f"test_gradient/{m}/start_vs_peak": v for m, p in profiles.items()
                if (v := p.start_vs_peak()) is not None}
    run = mlflow_logger.run_id
    for name, v in metrics.items():
        mlflow_logger.experiment.log_metric(run, name, v)
    if first is not None:
        ids, result = first
        keep = list(range(min(samples, len(ids))))
        picked = {m: {k: v[keep] for k, v in r.items()} for m, r in result.items()}
        fig = attribution_figure(picked, [ids[i] for i in keep])
        mlflow_logger.experiment.log_figure(run, fig, "plots/attribution.png")
        plt.close(fig)
        fig = gradient_figure(profiles, count)
        mlflow_logger.experiment.log_figure(run, fig, "plots/gradient_through_time.png")
        plt.close(fig)
    return metrics
