"""The test report of a trained model, as `gru-mm-train` (after testing) and `gru-mm-eval` both log it."""

from __future__ import annotations

import logging

import torch

from gru_mm import checkpoints
from gru_mm.evaluation.ablation import ablation_metrics, ablation_table, log_ablation
from gru_mm.evaluation.attribution import summarize_attributions
from gru_mm.evaluation.confusion import ConfusionCounter
from gru_mm.evaluation.gates import GATE_SAMPLES, first_gates
from gru_mm.evaluation.loader import full_test_loader
from gru_mm.evaluation.modality_check import check_modalities
from gru_mm.evaluation.per_class import log_per_class, per_class_table
from gru_mm.evaluation.tables import table_markdown
from gru_mm.tracking.plots import log_attribution_plots, log_confusion_matrix, log_gate_plots

log = logging.getLogger("gru_mm.evaluation")


def report(
    module,
    datamodule,
    mlflow_logger=None,
    device: torch.device | str | None = None,
    ckpt_path: str | None = None,
) -> dict[str, float]:
    """Evaluate the trained LightningModule on the datamodule's whole test split and log what it finds
    to the MLflow logger's run (when given; the tables are also written to the log):

    - the ablation: test metrics with each modality removed in turn (`test_ablation/<removed>/<metric>`,
      `ablation/ablation.{csv,md}`);
    - for multiclass and binary tasks, from the same pass: the per-class table (`test_class/<class>/<metric>`,
      `per_class/test_per_class.{csv,md}`) and the confusion matrix (`plots/test_confusion_matrix.png`);
    - with a logger: the GRU gates of the first test samples (`plots/gates_<modality>.png`, models with a
      GRU per modality), and from one gradient pass the attributions (`test_attribution/<m>/share`,
      `plots/attribution.png`) and gradient through time (`test_gradient/<m>/start_vs_peak`,
      `plots/gradient_through_time.png`);
    - a warning (log and tag `gru_mm.modality_warning.<m>`) for each modality that does not learn
      (`gru_mm.evaluation.modality_check`).

    device: where to evaluate (Lightning leaves a tested module on the CPU). ckpt_path: the tested
    checkpoint, loaded first (a spawned-process strategy tests in its children, leaving this process's
    module with other weights). Returns the ablation and attribution metrics.
    """
    if ckpt_path:
        module.load_state_dict(checkpoints.load(ckpt_path)["state_dict"])
    if device is not None:
        module.to(device)
    metrics = _ablation_and_classes(module, datamodule, mlflow_logger)
    # a modality whose own head stays at chance, or that the fused model ignores: a warning and an MLflow tag
    check_modalities(module, full_test_loader(datamodule), metrics, mlflow_logger, log)
    if mlflow_logger is not None:
        log_gate_plots(mlflow_logger, first_gates(module, full_test_loader(datamodule)))
        metrics |= _attributions(module, datamodule, mlflow_logger)
    return metrics


def _ablation_and_classes(module, datamodule, mlflow_logger) -> dict[str, float]:
    """The ablation, and in the same pass (its "none" row) the confusion counts of a classifier."""
    task = getattr(module, "task", "multiclass")
    counter = (
        ConfusionCounter(datamodule.num_classes, binary=task == "binary")
        if task in ("multiclass", "binary")
        else None
    )
    table = ablation_table(module, full_test_loader(datamodule), on_kept=counter)
    log.info("modality ablation on the test split:\n%s", table_markdown(table))
    if mlflow_logger is not None:
        log_ablation(mlflow_logger.experiment, mlflow_logger.run_id, table)
    if counter is not None:
        classes = (datamodule.meta() if hasattr(datamodule, "meta") else {}).get("classes")
        per_class = per_class_table(counter.counts, classes)
        log.info("per class on the test split:\n%s", table_markdown(per_class))
        if mlflow_logger is not None:
            log_per_class(mlflow_logger.experiment, mlflow_logger.run_id, per_class)
            log_confusion_matrix(mlflow_logger, counter.counts, classes)
    return ablation_metrics(table)


def _attributions(module, datamodule, mlflow_logger) -> dict[str, float]:
    """Attribution shares and gradient reach over the test split, logged with their figures."""
    if not hasattr(getattr(module, "net", None), "encoders"):
        return {}
    task = getattr(module, "task", "multiclass")
    summary = summarize_attributions(module, full_test_loader(datamodule), task)
    metrics = summary.metrics()
    for name, value in metrics.items():
        mlflow_logger.experiment.log_metric(mlflow_logger.run_id, name, value)
    if summary.first is not None:
        ids, result = summary.first_samples(GATE_SAMPLES)
        log_attribution_plots(mlflow_logger, result, ids, summary.gradient_curves())
    return metrics
