"""Per-modality ablation: the test metrics with each modality removed in turn (absent for every sample).

The removed modality takes its learned "absent" stand-in everywhere, exactly as for a sample that
lacks it, so the table says how much the trained model leans on each modality.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from gru_mm.data.batch import Batch
from gru_mm.models.multimodal import set_absent

log = logging.getLogger("gru_mm.ablation")
NONE = "none"  # the row with every modality kept


def fresh_test_metrics(module: nn.Module):
    """A fresh copy of the LightningModule's test metrics (so the ablation reports the same metrics)."""
    metrics = module.metrics["test_metrics"]
    fresh = metrics.clone()
    fresh.reset()
    return fresh


@torch.no_grad()
def ablation_table(module: nn.Module, batches: Iterable[Batch], device: torch.device | str | None = None,
                   on_kept: Callable[[torch.Tensor, Batch], None] | None = None
                   ) -> list[dict[str, float | str]]:
    """Rows {"removed": "none" | modality, metric: value, ...}: every modality kept, then each removed in turn.

    `module` is the trained LightningModule (its `net` is a MultimodalGRU); `batches` the test batches.
    One pass over the data evaluates all rows; `on_kept(logits, batch)` sees the "none" row's logits,
    so other reports of the tested model (the confusion matrix) need no pass of their own.
    """
    net = module.net
    if device is not None:
        module.to(device)  # Lightning leaves a tested module on the CPU
    device = next(module.parameters()).device
    rows = [NONE, *net.modalities]
    metrics = {r: fresh_test_metrics(module).to(device) for r in rows}
    was_training = module.training
    module.eval()
    try:
        for batch in batches:
            batch = batch.to(device)
            for removed in rows:
                inputs = batch.inputs
                if removed != NONE:
                    seq = inputs[removed]
                    inputs = {**inputs, removed: set_absent(seq, torch.ones(seq.batch_size, dtype=torch.bool))}
                logits = module(Batch(batch.ids, batch.target, inputs))
                metrics[removed].update(logits, batch.target)
                if removed == NONE and on_kept is not None:
                    on_kept(logits, batch)
    finally:
        module.train(was_training)
    table = []
    for removed in rows:
        values = {k.split("/", 1)[-1]: float(v) for k, v in metrics[removed].compute().items()}
        table.append({"removed": removed, **values})
    return table


def table_csv(table: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def table_markdown(table: list[dict]) -> str:
    keys = list(table[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in table:
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def log_ablation(client, run_id: str, table: list[dict], prefix: str = "test_ablation",
                 artifact_dir: str = "ablation") -> None:
    """Metrics `<prefix>/<removed>/<metric>` and the table as `<artifact_dir>/ablation.{csv,md}`."""
    for row in table:
        for key, value in row.items():
            if key != "removed":
                client.log_metric(run_id, f"{prefix}/{row['removed']}/{key}", value)
    client.log_text(run_id, table_csv(table), f"{artifact_dir}/ablation.csv")
    client.log_text(run_id, table_markdown(table), f"{artifact_dir}/ablation.md")


def per_class_table(counts: np.ndarray, classes: Sequence[str] | None = None) -> list[dict]:
    """Precision, recall, F1 and support of each class from [true, predicted] counts; 0 where a class
    was never predicted or never occurs (as scikit-learn's zero_division=0)."""
    counts = np.asarray(counts, dtype=np.float64)
    hits, support, predicted = np.diag(counts), counts.sum(1), counts.sum(0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    names = list(classes) if classes else [str(i) for i in range(len(counts))]
    return [{"class": str(names[k]), "precision": float(precision[k]), "recall": float(recall[k]),
             "f1": float(f1[k]), "support": int(support[k])} for k in range(len(counts))]


def log_per_class(client, run_id: str, table: list[dict], prefix: str = "test_class") -> None:
    """Metrics `<prefix>/<class>/{precision,recall,f1}` and the table as `per_class/test_per_class.{csv,md}`."""
    for row in table:
        name = re.sub(r"[^\w\-. /]", "_", row["class"])  # what MLflow allows in a metric name
        for key in ("precision", "recall", "f1"):
            client.log_metric(run_id, f"{prefix}/{name}/{key}", row[key])
    client.log_text(run_id, table_csv(table), "per_class/test_per_class.csv")
    client.log_text(run_id, table_markdown(table), "per_class/test_per_class.md")


def full_test_loader(datamodule):
    """The whole test split in one process (the datamodule shards by the attached trainer's world size)."""
    trainer = getattr(datamodule, "trainer", None)
    datamodule.trainer = None
    try:
        return datamodule.test_dataloader()
    finally:
        datamodule.trainer = trainer


def run_ablation(module: nn.Module, datamodule, mlflow_logger=None, device: torch.device | str | None = None,
                 ckpt_path: str | None = None) -> list[dict]:
    """Ablate on the datamodule's test split; log the table to the MLflow logger's run if given,
    and for multiclass and binary tasks the per-class table and the confusion matrix of the same pass
    (the "none" row).

    ckpt_path: the tested checkpoint, loaded first (a spawned-process strategy tests in its children,
    leaving this process's module with other weights).
    """
    from gru_mm.tracking.plots import ConfusionCounter, log_confusion_matrix

    if ckpt_path:
        module.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"])
    task = getattr(module, "task", "multiclass")
    counter = ConfusionCounter(datamodule.num_classes, binary=task == "binary") \
        if task in ("multiclass", "binary") else None
    table = ablation_table(module, full_test_loader(datamodule), device, on_kept=counter)
    log.info("modality ablation on the test split:\n%s", table_markdown(table))
    if mlflow_logger is not None:
        log_ablation(mlflow_logger.experiment, mlflow_logger.run_id, table)
    if counter is not None:
        meta = datamodule.meta() if hasattr(datamodule, "meta") else {}
        per_class = per_class_table(counter.counts, meta.get("classes"))
        log.info("per class on the test split:\n%s", table_markdown(per_class))
        if mlflow_logger is not None:
            log_per_class(mlflow_logger.experiment, mlflow_logger.run_id, per_class)
        log_confusion_matrix(counter.counts, datamodule, mlflow_logger)
    return table
