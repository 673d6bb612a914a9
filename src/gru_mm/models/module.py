"""The LightningModule: loss, metrics, optimiser and logging around a plain nn.Module."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from gru_mm.checkpoints import CheckpointError
from gru_mm.config import ConfigError
from gru_mm.data.batch import Batch
from gru_mm.models import balance, schedules

log = logging.getLogger("gru_mm.train")

TASKS = ("multiclass", "binary", "multilabel", "regression")
NONFINITE_ACTIONS = ("stop", "skip")  # what a training step with a NaN/inf loss or gradient does
# What a checkpoint monitor / sweeper should watch per task, and which way is better.
DEFAULT_MONITOR = {
    "multiclass": ("val/acc", "max"),
    "binary": ("val/acc", "max"),
    "multilabel": ("val/f1", "max"),
    "regression": ("val/mae", "min"),
}


class SignAccuracy(torchmetrics.Metric):
    """Binary accuracy of the sign of a regression output, as the CMU-MOSI/MOSEI literature reports it.

    exclude_zero=False: non-negative vs negative over all samples ("Acc-2", "Has0");
    exclude_zero=True: positive vs negative over samples whose target is not 0 ("Non0").
    """

    full_state_update = False

    def __init__(self, exclude_zero: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.exclude_zero = exclude_zero
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.exclude_zero:
            keep = target != 0
            preds, target = preds[keep], target[keep]
            hit = (preds > 0) == (target > 0)
        else:
            hit = (preds >= 0) == (target >= 0)
        self.correct += hit.sum()
        self.total += hit.numel()

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)


class WeightedMean(torchmetrics.Metric):
    """The weighted mean of scalars, as `self.log(value, batch_size=weight)` reduces them over an epoch.

    Not torchmetrics' MeanMetric: its NaN check is a host sync per update, and with the check disabled
    (torchmetrics 1.9) it drops the weights."""

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: float) -> None:
        self.total += value.detach().float() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight


class MeanPearsonCorrCoef(torchmetrics.PearsonCorrCoef):
    """Pearson's r of each of several regression targets, averaged (one number to log and monitor)."""

    def compute(self) -> torch.Tensor:
        return super().compute().mean()


def task_metrics(task: str, num_classes: int) -> dict[str, torchmetrics.Metric]:
    """Metric name (logged as `<stage>/<name>`) -> metric, per task."""
    if task == "multiclass":
        return {
            "acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes),
            "f1": torchmetrics.F1Score(task="multiclass", num_classes=num_classes, average="macro"),
        }
    if task == "binary":
        return {
            "acc": torchmetrics.Accuracy(task="binary"),
            "f1": torchmetrics.F1Score(task="binary"),
            "auroc": torchmetrics.AUROC(task="binary"),
        }
    if task == "multilabel":
        return {
            "acc": torchmetrics.Accuracy(task="multilabel", num_labels=num_classes),
            "f1": torchmetrics.F1Score(task="multilabel", num_labels=num_classes, average="macro"),
        }
    if task == "regression":  # num_classes: the number of targets; mae and acc2 pool them
        corr = (
            MeanPearsonCorrCoef(num_outputs=num_classes)
            if num_classes > 1
            else torchmetrics.PearsonCorrCoef()
        )
        return {
            "mae": torchmetrics.MeanAbsoluteError(),
            "corr": corr,
            "acc2": SignAccuracy(),
            "acc2_nonzero": SignAccuracy(exclude_zero=True),
        }
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


class TaskMetrics(torchmetrics.MetricCollection):
    """A task's metrics that take the net's raw output: they squeeze a single output and apply the sigmoid
    themselves, so any caller (the module, a per-modality ablation) updates them with logits and targets."""

    def __init__(self, task: str, num_classes: int, prefix: str | None = None):
        super().__init__(task_metrics(task, num_classes), prefix=prefix)
        self.task = task

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        if self.task in ("binary", "regression") and out.ndim == target.ndim + 1:
            out = out.squeeze(-1)
        if self.task in ("binary", "multilabel"):
            # probabilities, not logits, which torchmetrics would only guess at; integer targets
            out, target = out.sigmoid(), target.long()
        super().update(out, target)


def task_loss(
    task: str, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None
) -> nn.Module:
    """Cross-entropy for one class per sample, a sigmoid per output for binary/multilabel, L1 for regression
    (the MOSI literature's loss, and the MAE it reports). `class_weights` (from `loss_class_weights`):
    multiclass, a weight per class; binary/multilabel, the weight of positives per output."""
    if task == "multiclass":
        loss = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        name = "weight"
    elif task in ("binary", "multilabel"):
        loss, name = nn.BCEWithLogitsLoss(pos_weight=class_weights), "pos_weight"
    else:
        return nn.L1Loss()
    if (
        class_weights is not None
    ):  # come from the training data, not checkpoints: weighted or not, state dicts match
        loss.register_buffer(name, class_weights, persistent=False)
    return loss


def loss_class_weights(
    setting: Any,
    task: str,
    num_classes: int,
    train_targets: torch.Tensor | None,
    classes: list[str] | None = None,
) -> torch.Tensor | None:
    """`loss.class_weights` as the tensor `task_loss` takes. `balanced`: multiclass, n / (classes x the
    class's training count), as scikit-learn's "balanced"; binary and multilabel, negatives / positives
    per output. A list: multiclass, one weight per class; binary, [negative, positive] (positives get
    positive / negative); multilabel, the weight of each label's positives. A class without training
    samples counts as one."""
    key = "loss.class_weights"
    if setting is None:
        return None
    if task == "regression":
        raise ConfigError(f"{key} weighs classes, and this task is regression; leave it null")
    outputs = 2 if task == "binary" else num_classes
    if setting == "balanced":
        if train_targets is None:
            return None  # rebuilding a trained model for prediction: no loss is computed
        t = train_targets
        if task == "multiclass":
            counts = torch.bincount(t.long(), minlength=num_classes).double().clamp_min(1)
            return (len(t) / (num_classes * counts)).float()
        positives = t.reshape(len(t), -1).double().sum(0)
        return ((len(t) - positives) / positives.clamp_min(1)).float()
    values = list(setting)  # its form (positive numbers) was checked with the rest of the config
    if len(values) != outputs:
        names = f" ({', '.join(classes)})" if classes and task != "binary" else ""
        what = "[negative, positive]" if task == "binary" else f"one per class{names}"
        raise ConfigError(f"{key} has {len(values)} weights, and this {task} task needs {outputs}: {what}")
    weights = torch.tensor(values, dtype=torch.float32)
    return weights[1:] / weights[0] if task == "binary" else weights


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors in `state` (a state dict) that hold NaN or inf."""
    return [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def metric_names(task: str, num_classes: int = 2) -> set[str]:
    """Every metric name the module logs for a task (to check monitors before training)."""
    names = {
        "train/loss_step",
        "train/loss_epoch",
        "train/grad_norm",
        "train/padding_ratio",
        "train/l2_penalty",
        "train/skipped_steps",
    }
    for stage in ("train", "val", "test"):
        names |= {f"{stage}/loss"} | {f"{stage}/{m}" for m in task_metrics(task, max(num_classes, 2))}
    return names


class SequenceClassifier(pl.LightningModule):
    """Any of the four tasks over a plain nn.Module; logs `{train,val,test}/{loss, <task metrics>}`.

    multiclass: acc, f1 (macro).  binary: acc, f1, auroc.  multilabel: acc, f1 (macro over labels).
    regression: mae, corr (Pearson; with several targets the mean of theirs), acc2 and acc2_nonzero
    (sign accuracy, see `SignAccuracy`). The net's output has `num_classes` values per sample (1 for
    binary; for regression one per target).

    A training step whose loss or gradient is NaN or infinite stops the run (`nonfinite_grad="stop"`),
    or leaves the weights as they were (`"skip"`: counted in `train/skipped_steps`; `max_skips_in_a_row`
    such steps in a row still stop it, the run has then diverged). A checkpoint is never written with
    non-finite weights.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
        task: str = "multiclass",
        class_weights: torch.Tensor | None = None,
        nonfinite_grad: str = "stop",
        max_skips_in_a_row: int = 10,
    ):
        super().__init__()
        if nonfinite_grad not in NONFINITE_ACTIONS:
            raise ConfigError(
                f"nonfinite_grad.action must be one of {', '.join(NONFINITE_ACTIONS)}, got {nonfinite_grad!r}"
            )
        if (
            isinstance(max_skips_in_a_row, bool)
            or not isinstance(max_skips_in_a_row, int)
            or max_skips_in_a_row < 1
        ):
            raise ConfigError(
                f"nonfinite_grad.max_skips_in_a_row must be a positive integer, got {max_skips_in_a_row!r}"
            )
        self.nonfinite_grad = nonfinite_grad
        self.max_skips_in_a_row = max_skips_in_a_row
        self.skipped_steps = 0  # over the whole run (kept in checkpoints)
        self._skips_in_a_row = 0
        self.net = net
        self.task = task
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.loss_fn = task_loss(task, label_smoothing, class_weights)
        metrics = TaskMetrics(task, num_classes)
        # ModuleDict keys cannot be "train" (an nn.Module method), hence the "_metrics" suffix.
        self.metrics = nn.ModuleDict(
            {f"{s}_metrics": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")}
        )
        # A net with a head per modality (gru_mm.models.balance) logs `<stage>_modality/<m>/<metric>` too: the
        # signal that says whether each modality learns at all (keyed by position: names may hold dots).
        self.modality_names = (
            list(net.unimodal.heads) if isinstance(getattr(net, "unimodal", None), nn.Module) else []
        )
        self.modality_metrics = nn.ModuleDict(
            {
                f"{s}_{i}": metrics.clone(prefix=f"{s}_modality/{m}/")
                for s in ("train", "val", "test")
                for i, m in enumerate(self.modality_names)
            }
        )
        # their losses' epoch means, weighted by the samples that have the modality (as `self.log` weighed)
        self.modality_losses = nn.ModuleDict(
            {
                f"{s}_{i}": WeightedMean()
                for s in ("train", "val", "test")
                for i, _ in enumerate(self.modality_names)
            }
        )
        # Stages whose epoch-level Metric objects were handed to `self.log` this epoch. Lightning's `log`
        # costs host time per call (its result bookkeeping), and a Metric object needs it once per epoch: it
        # accumulates through our `update` calls, Lightning computes and resets it at the epoch's end, so
        # the logged values are those of logging it every step.
        self._epoch_logged: set[str] = set()
        self._l2_layers: list[nn.Module] | None = None  # the layers that may declare weight penalties
        if getattr(net, "ogm_ge", None) is not None and task == "regression":
            raise ConfigError(
                "model.ogm_ge scores each modality by its confidence in the true class, and this task "
                "is regression: set model.ogm_ge.enabled=false"
            )
        self._ogm_scores: torch.Tensor | None = None  # this training batch's, for on_after_backward
        self._padded_steps = 0
        self._real_steps = 0
        # A learning-rate range test drives the loss to infinity on purpose and stops itself there.
        self.stop_on_nonfinite_loss = True
        # Saved into every checkpoint: the resolved config, experiment name and MLflow run id,
        # so `ckpt_path=last` resumes the same run and gru-mm-eval rebuilds the same model.
        self.run_meta: dict[str, Any] = {}
        # The data's meaning (task, class names, vocabularies), saved with the weights and checked on load.
        self.data_meta: dict[str, Any] = {}

    def reset_running_state(self) -> None:
        """Forget what steps outside training proper (a learning-rate range test) accumulated."""
        for collection in (self.metrics, self.modality_metrics, self.modality_losses):
            for metrics in collection.values():
                metrics.reset()
        self._padded_steps = self._real_steps = 0
        self._epoch_logged.clear()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The last line of defence (gru_mm.callbacks.checkpoint skips such saves with a warning):
        # whoever saves, a checkpoint with NaN/inf weights would poison a resume or a deployment.
        if bad := nonfinite_tensors(checkpoint.get("state_dict", {})):
            raise FloatingPointError(
                f"refusing to write a checkpoint at epoch {self.current_epoch}, step "
                f"{self.global_step}: non-finite weights in {', '.join(bad[:3])}"
            )
        checkpoint["gru_mm_skipped_steps"] = self.skipped_steps
        checkpoint["gru_mm"] = self.run_meta
        if self.data_meta:
            checkpoint["gru_mm_data"] = self.data_meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("gru_mm_skipped_steps", 0))
        # Class k or token id i must mean what it meant in training: a manifest that gained a class name or
        # changed its training texts would otherwise give silently wrong predictions.
        saved = checkpoint.get("gru_mm_data")
        if not saved or not self.data_meta:
            return
        for key in ("task", "classes", "vocab"):
            if saved.get(key) != self.data_meta.get(key):
                raise CheckpointError(
                    f"the checkpoint was trained with other {key} than the data gives now "
                    "(e.g. a changed manifest); evaluate it on the data it was trained with"
                )

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(batch.inputs)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batch.to keeps sequence lengths on the CPU (the generic mover would send them to the GPU).
        if isinstance(batch, Batch):
            return batch.to(device, non_blocking=True)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _regularization(self) -> torch.Tensor | None:
        """Weight penalties that layers declare (the GRU's optional per-group L2), summed."""
        if self._l2_layers is None:  # walking every module each step costs host time
            self._l2_layers = [m for m in self.net.modules() if hasattr(m, "regularization_loss")]
        terms = [m.regularization_loss() for m in self._l2_layers if any(getattr(m, "l2", {}).values())]
        return torch.stack(terms).sum() if terms else None

    def outputs(self, batch: Batch) -> torch.Tensor:
        return self._as_target(self(batch))

    def _as_target(self, out: torch.Tensor) -> torch.Tensor:
        # one output per sample for binary and single-target regression: [B, 1] -> [B], the target's shape
        return out.squeeze(-1) if self.task in ("binary", "regression") else out

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        parts = self.net.forward_parts(batch.inputs) if self.modality_names else None
        logits = self.outputs(batch) if parts is None else self._as_target(parts.logits)
        loss = self.loss_fn(logits, batch.target)
        unimodal = None
        if parts is not None:
            unimodal = balance.unimodal_losses(
                self.loss_fn,
                {m: self._as_target(v) for m, v in parts.unimodal.items()},
                {m: x.present for m, x in parts.fused.items()},
                batch.target,
                self.net.unimodal.loss_weights,
            )
            if stage == "train":  # the auxiliary losses are part of what training minimises and logs
                loss = loss + unimodal.objective
        if stage == "train" and (penalty := self._regularization()) is not None:
            self.log("train/l2_penalty", penalty, on_step=False, on_epoch=True, batch_size=len(batch))
            loss = loss + penalty
        if self.stop_on_nonfinite_loss and not torch.isfinite(loss):
            ids = ", ".join(batch.ids[:3]) + (", ..." if len(batch.ids) > 3 else "")
            if self.nonfinite_grad == "stop":
                raise FloatingPointError(
                    f"{stage} loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                    f"(batch {ids}): lower optimizer.lr, set trainer.gradient_clip_val, "
                    "or check those samples"
                )
            if stage == "train" and self.trainer.world_size == 1:
                # its gradient is non-finite too: on_before_optimizer_step skips the step. Not logged, so the
                # epoch's mean stays finite (with several processes all must log alike, or they would hang).
                return loss
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), batch.target)
        on_step = stage == "train"
        # sync_dist: under DDP the logged loss is the mean over all processes' samples, not rank 0's alone
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch),
            sync_dist=True,
        )
        register = stage not in self._epoch_logged  # epoch-level Metric objects: once an epoch (see __init__)
        self._epoch_logged.add(stage)
        if register:
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train")
        if unimodal is None:
            return loss
        self._log_unimodal(parts, unimodal, batch, stage, register)
        if stage != "train":
            return loss
        if self.net.ogm_ge is not None:
            self._ogm_scores = balance.modality_scores(self.net, parts, batch.target, self.task)
        # the probes learn from their losses' gradient (their inputs are detached) while the loss's value,
        # which an lr_find or a callback may read, stays the model's own
        return loss + (unimodal.probes - unimodal.probes.detach())

    def _log_unimodal(
        self, parts: Any, unimodal: balance.UnimodalLosses, batch: Batch, stage: str, register: bool
    ) -> None:
        """Each modality's own head: its loss and the task's metrics, over the samples that have it
        (`register`: hand the Metric objects to Lightning, once per epoch)."""
        for i, m in enumerate(self.modality_names):
            keep = parts.fused[m].present
            n = int(keep.sum())
            mean_loss = self.modality_losses[f"{stage}_{i}"]
            mean_loss.update(unimodal.losses[m], max(n, 1))  # synced across processes by torchmetrics
            metrics = self.modality_metrics[f"{stage}_{i}"]
            if n:
                metrics.update(self._as_target(parts.unimodal[m][keep].detach()), batch.target[keep])
            if register:
                self.log(f"{stage}_modality/{m}/loss", mean_loss, on_step=False, on_epoch=True)
                self.log_dict(metrics, on_step=False, on_epoch=True)

    def on_after_backward(self) -> None:
        # OGM-GE: damp the dominant modality's gradients (reduced across processes, so all apply the same)
        scores, self._ogm_scores = self._ogm_scores, None
        if scores is None:
            return
        if self._trainer is not None:
            scores = self.trainer.strategy.reduce(scores, reduce_op="sum")
        coefficients = balance.apply_gradient_modulation(self.net, scores, step=self.global_step)
        for m, k in coefficients.items():
            self.log(f"train_modality/{m}/ogm_coefficient", k, on_step=False, on_epoch=True)

    def on_train_epoch_start(self) -> None:
        self._epoch_logged.discard("train")

    def on_validation_epoch_start(self) -> None:
        self._epoch_logged.discard("val")

    def on_test_epoch_start(self) -> None:
        self._epoch_logged.discard("test")

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        padded, real = batch.padding_stats()
        self._padded_steps += padded
        self._real_steps += real
        return self._step(batch, "train")

    def on_train_epoch_end(self) -> None:
        if self._real_steps:
            # padded steps / real steps over the epoch: 1.0 means no padding at all
            self.log("train/padding_ratio", self._padded_steps / self._real_steps, sync_dist=True)
        self._padded_steps = self._real_steps = 0

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        out = self.outputs(batch)
        if self.task == "regression":
            return {"ids": batch.ids, "preds": out.cpu()}
        probs = out.softmax(-1) if self.task == "multiclass" else out.sigmoid()
        return {"ids": batch.ids, "probs": probs.cpu()}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Called before Lightning clips: this is the raw norm, the signal of exploding gradients.
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)  # NaN or inf when any gradient is
        if self.stop_on_nonfinite_loss and not torch.isfinite(
            norm
        ):  # (a learning-rate range test lets it be)
            self._skip_nonfinite_step(norm)
            return
        self._skips_in_a_row = 0
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def _skip_nonfinite_step(self, norm: torch.Tensor) -> None:
        """Stop the run, or drop this step's gradients so that the optimizer leaves the weights as they are
        (it skips parameters without a gradient; under DDP every process has the same reduced gradients)."""
        where = f"at epoch {self.current_epoch}, step {self.global_step}"
        advice = "lower optimizer.lr, set trainer.gradient_clip_val, or check the data"
        if self.nonfinite_grad == "stop":
            raise FloatingPointError(
                f"the gradient norm is {norm.item()} {where}: {advice} "
                "(nonfinite_grad.action=skip skips such steps)"
            )
        for p in self.parameters():
            p.grad = None
        self.skipped_steps += 1
        self._skips_in_a_row += 1
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        log.warning(
            "skipped training step %s: the gradient norm is %s (%d skipped in all)",
            where,
            norm.item(),
            self.skipped_steps,
        )
        if self._skips_in_a_row >= self.max_skips_in_a_row:
            raise FloatingPointError(
                f"{self._skips_in_a_row} training steps in a row had a non-finite gradient "
                f"(the last {where}): the run has diverged; {advice}"
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # a schedule per training step (schedules.WarmupCosineLR) is told the steps per epoch
        length = schedules.run_length(self.scheduler_factory, self._trainer, self.scheduler_interval)
        scheduler = self.scheduler_factory(optimizer=optimizer, **length)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }
