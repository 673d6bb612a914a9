"""The LightningModule: loss, metrics, optimiser and logging around a plain nn.Module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from gru_mm.data.batch import Batch


class SequenceClassifier(pl.LightningModule):
    """Multiclass classification with cross-entropy; logs `{train,val,test}/{loss,acc,f1}`."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        metrics = torchmetrics.MetricCollection(
            {
                "acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes),
                "f1": torchmetrics.F1Score(task="multiclass", num_classes=num_classes, average="macro"),
            }
        )
        # ModuleDict keys cannot be "train" (an nn.Module method), hence the "_metrics" suffix.
        self.metrics = nn.ModuleDict({f"{s}_metrics": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")})
        self._padded_steps = 0
        self._real_steps = 0
        # Saved into every checkpoint: the resolved config, experiment name and MLflow run id,
        # so `ckpt_path=last` resumes the same run and gru-mm-eval rebuilds the same model.
        self.run_meta: dict[str, Any] = {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gru_mm"] = self.run_meta

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(batch.inputs)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batch.to keeps sequence lengths on the CPU (the generic mover would send them to the GPU).
        if isinstance(batch, Batch):
            return batch.to(device, non_blocking=True)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _regularization(self) -> torch.Tensor | None:
        """Weight penalties that layers declare (the GRU's optional per-group L2), summed."""
        terms = [m.regularization_loss() for m in self.net.modules()
                 if hasattr(m, "regularization_loss") and any(getattr(m, "l2", {}).values())]
        return torch.stack(terms).sum() if terms else None

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = self.loss_fn(logits, batch.target)
        if stage == "train" and (penalty := self._regularization()) is not None:
            self.log("train/l2_penalty", penalty, on_step=False, on_epoch=True, batch_size=len(batch))
            loss = loss + penalty
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage} loss is {loss.item()} at batch with ids {batch.ids[:3]}...: check the data and learning rate"
            )
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), batch.target)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(batch),
                 sync_dist=stage != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=len(batch))
        return loss

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
        probs = self(batch).softmax(-1)
        return {"ids": batch.ids, "probs": probs.cpu()}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Called before Lightning clips: this is the raw norm, the signal of exploding gradients.
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
