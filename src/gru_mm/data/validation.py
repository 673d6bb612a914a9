"""Recording what validation found: with data.on_error=skip, which samples were left out and why."""

from __future__ import annotations

import logging
from collections import Counter

from gru_mm.data.datamodule import DataReport

log = logging.getLogger("gru_mm.data")


def summary(report: DataReport, n_samples: int) -> str:
    """One line: samples read, problems, and how many of each kind."""
    kinds = Counter(p.kind for p in report.problems)
    detail = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    bad = len({p.id for p in report.problems})
    return f"{n_samples} usable sample(s), {len(report.problems)} problem(s) in {bad} sample(s)" + (
        f": {detail}" if detail else ""
    )


def log_report(mlflow_logger, report: DataReport | None) -> None:
    """MLflow: metric `data/skipped_samples` and, when any, the artifact `data/problems.tsv` (id, column,
    problem)."""
    if mlflow_logger is None or report is None:
        return
    client, run_id = mlflow_logger.experiment, mlflow_logger.run_id
    client.log_metric(run_id, "data/skipped_samples", len(report.skipped_ids))
    client.log_metric(run_id, "data/problems", len(report.problems))
    if report.problems:
        client.log_text(run_id, "id\tcolumn\tproblem\n" + report.tsv(), "data/problems.tsv")
