"""`lr_find.enabled=true`: Lightning's learning-rate range test before training; the run then trains
from a tenth of the rate at the lowest loss (`suggest`).

The test runs on a trainer of its own (no loggers, callbacks or checkpoints), so the run's trainer,
MLflow run and checkpoint folder see nothing of it; Lightning restores the weights afterwards.
"""

from __future__ import annotations

import functools
import logging
import math

import hydra
from omegaconf import DictConfig
from pytorch_lightning.tuner import Tuner

from gru_mm.config import ConfigError

log = logging.getLogger("gru_mm.train")


# Lightning 2.6's range test smooths the loss with beta 0.98 and divides by 1 - beta^(k+1) with k the
# global step *after* the k-th optimizer step, one too many (Lightning issue #14167 shows the result: the
# curve starts at half the loss and climbs for dozens of steps, which moves the suggestion). Rescaling
# each point by (1 - beta^(i+2)) / (1 - beta^(i+1)) gives the correctly debiased running mean; the first
# point is then the first loss itself. tests/models/test_module.py checks that on the installed version.
LIGHTNING_BETA = 0.98


def unbiased(smoothed: list[float]) -> list[float]:
    b = LIGHTNING_BETA
    return [v * (1 - b ** (i + 2)) / (1 - b ** (i + 1)) for i, v in enumerate(smoothed)]


def suggest(lrs: list[float], losses: list[float], skip_begin: int = 10) -> float | None:
    """The rate at the lowest smoothed loss, divided by 10 (the "minimum / 10" rule of fastai's range
    test): far enough below the rates where training diverges. Not Lightning's `suggestion()`: in 2.6 it
    takes the steepest slope against the linear rate, which favours the smallest rates tried (on the
    default experiment: 6.9e-06, and test accuracy 0.188 after 6 epochs)."""
    pairs = [
        (loss, lr) for lr, loss in list(zip(lrs, losses, strict=True))[skip_begin:] if math.isfinite(loss)
    ]
    if len(pairs) < 2:
        return None
    return min(pairs)[1] / 10


def wanted(cfg: DictConfig, resuming: bool, world_size: int) -> bool:
    """Whether this run starts with a range test (a resumed run keeps its optimizer); checked before
    the run starts, since the test runs in one process."""
    if not (cfg.get("lr_find") and cfg.lr_find.enabled) or resuming:
        return False
    if world_size > 1:
        raise ConfigError(
            "lr_find.enabled runs in one process: find the rate without DDP (trainer=cpu or gpu), "
            "then set optimizer.lr"
        )
    return True


def find_lr(cfg: DictConfig, module, datamodule, mlflow_logger=None, on_curve=None) -> float | None:
    """Run the range test, log `lr_find/suggested_lr` and `plots/lr_find.png`, and make the module's
    optimizer start from the suggestion. Returns it (None: no clear minimum; optimizer.lr stays).
    `on_curve` (tests) receives the curve: {"lr": [...], "loss": [...]}."""
    settings = cfg.lr_find
    from gru_mm.tracking.plots import plt  # the Agg backend before Lightning draws the curve

    # max_epochs=-1: the test's step count ends it, however few batches an epoch has (debug=smoke)
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=-1,
        num_sanity_val_steps=0,
        default_root_dir=cfg.paths.output_dir,
    )
    log.info("lr_find: %d steps from %g to %g", settings.steps, settings.min_lr, settings.max_lr)
    module.stop_on_nonfinite_loss = False
    try:
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=settings.min_lr,
            max_lr=settings.max_lr,
            num_training=settings.steps,
            update_attr=False,
        )
    finally:
        module.stop_on_nonfinite_loss = True
        module.reset_running_state()
    if finder is not None:
        finder.results["loss"] = unbiased(finder.results["loss"])
        if on_curve is not None:
            on_curve(dict(finder.results))
    suggestion = suggest(finder.results["lr"], finder.results["loss"]) if finder is not None else None
    if suggestion is None:
        log.warning(
            "lr_find: no clear minimum in %d steps; training with optimizer.lr=%g",
            settings.steps,
            cfg.optimizer.lr,
        )
        return None
    log.info(
        "lr_find: training with %.3g, a tenth of the rate at the lowest loss (optimizer.lr was %g)",
        suggestion,
        cfg.optimizer.lr,
    )
    module.optimizer_factory = functools.partial(module.optimizer_factory, lr=suggestion)
    if mlflow_logger is not None:
        mlflow_logger.experiment.log_metric(mlflow_logger.run_id, "lr_find/suggested_lr", suggestion)
        fig = finder.plot(suggest=False)
        ax = fig.axes[0]
        ax.axvline(
            suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.3g} (lowest loss / 10)"
        )
        ax.legend()
        ax.set_title("learning-rate range test (running mean of the loss)")
        mlflow_logger.experiment.log_figure(mlflow_logger.run_id, fig, "plots/lr_find.png")
        plt.close(fig)
    return suggestion
