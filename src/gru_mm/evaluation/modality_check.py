"""Whether each modality learns: its own head's test score against chance, and what removing it costs.

Two findings raise a warning (in the log, and as the MLflow tag `gru_mm.modality_warning.<m>`):
- its own head stays at chance: the modality's data, or its encoder, teaches nothing;
- it contributes nothing to the fused prediction (removing it changes the fused test score by less than
  `MIN_CONTRIBUTION`) although its own head learns: the fusion ignores a modality that carries the label.

"At chance" means within `learn_margin` of always predicting the test split's commonest class (see there).
The score is accuracy (regression: acc2, the sign's); the own heads are `gru_mm.models.balance.UnimodalHeads`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from gru_mm.data.batch import Batch
from gru_mm.evaluation.ablation import fresh_test_metrics
from gru_mm.evaluation.mode import eval_mode
from gru_mm.evaluation.tables import table_markdown

MIN_CONTRIBUTION = 0.01  # a modality whose removal moves the fused score by less contributes nothing
LEARN_MARGIN = 0.05  # the least gain over chance that counts as learning (more on a small test split)
TAG = "gru_mm.modality_warning"


def score_name(task: str) -> str:
    return "acc2" if task == "regression" else "acc"


def chance_score(task: str, targets: torch.Tensor) -> float:
    """The score of always predicting the commonest value: per class (multiclass), per output's 0/1
    (binary, multilabel: averaged over outputs, as the macro accuracy is), per sign (regression's acc2)."""
    t = targets.reshape(len(targets), -1).double()
    if task == "multiclass":
        return float(torch.bincount(targets.long()).max()) / max(len(targets), 1)
    positive = (t >= 0).double() if task == "regression" else (t > 0.5).double()
    share = positive.mean(0)
    return float(torch.maximum(share, 1 - share).mean())


def learn_margin(chance: float, n: int) -> float:
    """How far above chance a score must lie to count as learning: LEARN_MARGIN, or three standard errors
    of a chance-level predictor's accuracy on n samples where that is more (small test splits)."""
    return max(LEARN_MARGIN, 3 * math.sqrt(chance * (1 - chance) / max(n, 1)))


@torch.no_grad()
def own_head_scores(
    module: nn.Module, batches: Iterable[Batch]
) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """({modality: {metric: value, "n": samples}} of each modality's own head over the samples that have it,
    every target of the split). `module` is the LightningModule, on the device to evaluate on."""
    net = module.net
    device = next(module.parameters()).device
    metrics = {m: fresh_test_metrics(module).to(device) for m in net.modalities}
    counts = dict.fromkeys(net.modalities, 0)
    targets = []
    with eval_mode(module):
        for batch in batches:
            batch = batch.to(device)
            parts = net.forward_parts(batch.inputs)
            targets.append(batch.target.cpu())
            for m in net.modalities:
                keep = parts.fused[m].present
                if bool(keep.any()):
                    metrics[m].update(module._as_target(parts.unimodal[m][keep]), batch.target[keep])
                    counts[m] += int(keep.sum())
    scores = {
        m: {
            **({k.split("/", 1)[-1]: float(v) for k, v in metrics[m].compute().items()} if counts[m] else {}),
            "n": counts[m],
        }
        for m in net.modalities
    }
    return scores, torch.cat(targets) if targets else torch.zeros(0)


def modality_warnings(
    task: str, ablation: dict[str, float], own: dict[str, dict[str, float]], chance: float, n: int
) -> dict[str, str]:
    """Modality -> why it is not learning, for those that are not. `ablation`: the report's metrics
    (`test_ablation/<removed>/<metric>`); `own`: `own_head_scores`' first item; n: test samples."""
    name = score_name(task)
    margin = learn_margin(chance, n)
    fused = ablation.get(f"test_ablation/none/{name}")
    warnings = {}
    for m, scores in own.items():
        score = scores.get(name)
        if score is None:
            continue  # no test sample has m: nothing to say
        if score <= chance + margin:
            warnings[m] = (
                f"modality {m} does not learn: its own head's test {name} is {score:.3f}, within "
                f"{margin:.3f} of chance ({chance:.3f}); check its data and its encoder"
            )
            continue
        without = ablation.get(f"test_ablation/{m}/{name}")
        if fused is not None and without is not None and fused - without < MIN_CONTRIBUTION:
            warnings[m] = (
                f"modality {m} contributes nothing to the fused model: removing it changes the test "
                f"{name} by {without - fused:+.3f}, although its own head reaches {score:.3f} (chance "
                f"{chance:.3f}); try model.unimodal_heads.weight=1 or model.ogm_ge.enabled=true"
            )
    return warnings


def check_modalities(
    module: nn.Module, batches: Iterable[Batch], ablation: dict[str, float], mlflow_logger=None, log=None
) -> dict[str, str]:
    """Own-head scores on the test batches against chance and the ablation: the table and each warning go
    to `log`, each warning also to the run as the tag `gru_mm.modality_warning.<m>`. Returns the warnings
    (nothing for a net without a head per modality)."""
    if not hasattr(getattr(module, "net", None), "forward_parts"):
        return {}
    task = getattr(module, "task", "multiclass")
    own, targets = own_head_scores(module, batches)
    if not len(targets):
        return {}
    chance = chance_score(task, targets)
    warnings = modality_warnings(task, ablation, own, chance, len(targets))
    name = score_name(task)
    fused = ablation.get(f"test_ablation/none/{name}", math.nan)
    rows = [
        {
            "modality": m,
            f"own head {name}": s.get(name, math.nan),
            f"chance {name}": chance,
            f"fused {name} without it": ablation.get(f"test_ablation/{m}/{name}", math.nan),
            f"fused {name}": fused,
            "warning": "yes" if m in warnings else "no",
        }
        for m, s in own.items()
    ]
    if log is not None:
        log.info(
            "modalities on the test split (own head: the modality's own head alone):\n%s",
            table_markdown(rows),
        )
        for message in warnings.values():
            log.warning(message)
    if mlflow_logger is not None:
        for m, message in warnings.items():
            mlflow_logger.experiment.set_tag(mlflow_logger.run_id, f"{TAG}.{m}", message[:5000])
    return warnings
