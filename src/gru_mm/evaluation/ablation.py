"""Per-modality ablation: the test metrics with each modality removed in turn (absent for every sample).

The removed modality takes its learned "absent" stand-in everywhere, exactly as for a sample that
lacks it, so the table says how much the trained model leans on each modality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from gru_mm.data.batch import Batch
from gru_mm.evaluation.mode import eval_mode
from gru_mm.evaluation.tables import log_table
from gru_mm.models.multimodal import set_absent

NONE = "none"  # the row with every modality kept


def fresh_test_metrics(module: nn.Module):
    """A fresh copy of the LightningModule's test metrics (so the ablation reports the same metrics)."""
    fresh = module.metrics["test_metrics"].clone()
    fresh.reset()
    return fresh


@torch.no_grad()
def ablation_table(
    module: nn.Module, batches: Iterable[Batch], on_kept: Callable[[torch.Tensor, Batch], None] | None = None
) -> list[dict[str, float | str]]:
    """Rows {"removed": "none" | modality, metric: value, ...}: every modality kept, then each removed
    in turn.

    `module` is the trained LightningModule (its `net` is a MultimodalGRU), on the device to test on;
    `batches` the test batches. One pass over the data evaluates all rows; `on_kept(logits, batch)` sees
    the "none" row's logits, so other reports of the tested model (the confusion matrix) need no pass of
    their own.
    """
    device = next(module.parameters()).device
    rows = [NONE, *module.net.modalities]
    metrics = {r: fresh_test_metrics(module).to(device) for r in rows}
    with eval_mode(module):
        for batch in batches:
            batch = batch.to(device)
            for removed in rows:
                inputs = batch.inputs
                if removed != NONE:
                    seq = inputs[removed]
                    absent = torch.ones(seq.batch_size, dtype=torch.bool)
                    inputs = {**inputs, removed: set_absent(seq, absent)}
                logits = module(Batch(batch.ids, batch.target, inputs))
                metrics[removed].update(logits, batch.target)
                if removed == NONE and on_kept is not None:
                    on_kept(logits, batch)
    table = []
    for removed in rows:
        values = {k.split("/", 1)[-1]: float(v) for k, v in metrics[removed].compute().items()}
        table.append({"removed": removed, **values})
    return table


def ablation_metrics(table: list[dict], prefix: str = "test_ablation") -> dict[str, float]:
    """The table as metrics `<prefix>/<removed>/<metric>`."""
    return {
        f"{prefix}/{row['removed']}/{key}": value
        for row in table
        for key, value in row.items()
        if key != "removed"
    }


def log_ablation(
    client, run_id: str, table: list[dict], prefix: str = "test_ablation", artifact_dir: str = "ablation"
) -> None:
    """Metrics `<prefix>/<removed>/<metric>` and the table as `<artifact_dir>/ablation.{csv,md}`."""
    for name, value in ablation_metrics(table, prefix).items():
        client.log_metric(run_id, name, value)
    log_table(client, run_id, table, f"{artifact_dir}/ablation")
