"""`gru-mm-eval ckpt_path=...`: test a checkpoint with the config it was trained with, ablate each
modality in turn, log both to MLflow. With `data.path=FILE`, test it on every sample of another
labeled file of its data's kind instead (decoded as its training data was)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gru_mm import checkpoints
from gru_mm.config import ConfigError, register_resolvers, silence_known_warnings
from gru_mm.data.sources.base import DataError
from gru_mm.data.sources.held_out import HeldOut
from gru_mm.evaluation.report import report
from gru_mm.models.build import build_datamodule, build_module, retarget_data
from gru_mm.nn.onednn_cache import disable_primitive_cache
from gru_mm.paths import CONF_DIR
from gru_mm.tracking.run import default_run_name, mlflow_logger, run_location, run_tags
from hydra_plugins.gru_mm_optuna_sweeper._storage import redact, redact_values

log = logging.getLogger("gru_mm.eval")
register_resolvers()
silence_known_warnings()


def _held_out_data(cfg: DictConfig, train_cfg: DictConfig, ckpt: str, data_meta: dict | None):
    """The datamodule of `data.path`: another labeled file, all of it the test split, decoded with the
    checkpoint's vocabularies, statistics and classes (`data_meta`)."""
    if cfg.data.on_error not in ("fail", "skip"):
        raise ConfigError(f"data.on_error={cfg.data.on_error!r} must be fail or skip")
    if not data_meta or "feature_shapes" not in data_meta:
        raise checkpoints.CheckpointError(
            f"ckpt_path={ckpt}: the checkpoint predates data.path for gru-mm-eval "
            "(it lacks its data's shapes); evaluate it on its own data"
        )
    retargeted = retarget_data(
        train_cfg, cfg.data.path, cfg.paths.data_dir, cfg.data.trust_pickle, what="data.path"
    )
    datamodule = build_datamodule(retargeted)
    datamodule.source = HeldOut(datamodule.source, data_meta)
    datamodule.path, datamodule.on_error = cfg.data.path, cfg.data.on_error  # what its problem list names
    return datamodule


def eval_run_name(experiment: str, overrides: list[str]) -> str:
    """`<experiment> eval <overrides> <time> <4 hex>`: distinct and readable, like a training run's name
    (MLflow's own names repeat: it draws them from the seeded `random`). The checkpoint, a long path, is
    left out: the run's `gru_mm.checkpoint` tag names it. Passwords in URLs are masked."""
    return redact(
        default_run_name(experiment, ["eval", *(o for o in overrides if not o.startswith("ckpt_path="))])
    )


def eval_tags(checkpoint: Path | str, held_out: str | None, source_run_id: str | None) -> dict[str, str]:
    """The eval run's tags; passwords in URLs (of the command line, say) are masked, as training's are."""
    tags = run_tags([]) | {"gru_mm.job": "eval", "gru_mm.checkpoint": str(checkpoint)}
    if held_out:
        tags["gru_mm.eval_data"] = str(held_out)
    if source_run_id:
        tags["gru_mm.source_run_id"] = source_run_id
    return redact_values(tags)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if cfg.ckpt_path == "last" and not cfg.experiment_name:
        raise ConfigError("ckpt_path=last needs experiment_name=NAME to know whose checkpoint to take")
    path = checkpoints.resolve(cfg.ckpt_path, cfg.paths.log_dir, cfg.experiment_name)
    checkpoint = checkpoints.load(path)  # read once (weights_only), for its config and data meta
    meta, data_meta = checkpoint.get("gru_mm", {}), checkpoint.get("gru_mm_data")
    del checkpoint  # its weights: Lightning loads them for the test
    if "config" not in meta:
        raise checkpoints.CheckpointError(f"ckpt_path={path}: not a gru-mm checkpoint (it holds no config)")
    # nothing is built before the whole config passed the allow-list; eval's own data.trust_pickle decides
    trust_pickle = (cfg.get("data") or {}).get("trust_pickle")
    train_cfg = checkpoints.trusted_config(meta["config"], path, trust_pickle=trust_pickle)
    if cfg.eval_batch_size:
        train_cfg.data.eval_batch_size = cfg.eval_batch_size
    held_out = cfg.get("data") and cfg.data.get("path")
    datamodule = _held_out_data(cfg, train_cfg, path, data_meta) if held_out else build_datamodule(train_cfg)
    datamodule.validate()  # the same checks as training; also fixes vocabularies and sizes from the data
    module = build_module(train_cfg, datamodule=datamodule, pretrained=False)  # weights: the checkpoint's
    experiment = cfg.experiment_name or meta.get("experiment_name") or train_cfg.experiment_name
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    tags = eval_tags(path, held_out, meta.get("mlflow_run_id"))
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        kwargs = {"experiment_name": experiment, "tags": tags} if name == "mlflow" else {}
        if name == "mlflow" and not node.get("run_name"):
            kwargs["run_name"] = eval_run_name(experiment, overrides)
        loggers.append(hydra.utils.instantiate(node, **kwargs))
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, callbacks=[])
    results = trainer.test(module, datamodule=datamodule, ckpt_path=str(path), weights_only=True)
    metrics = dict(results[0]) if results else {}
    if cfg.get("ablation", True) and trainer.is_global_zero:
        metrics |= report(module, datamodule, mlflow_logger(loggers), trainer.strategy.root_device, str(path))
    if (mlflow := mlflow_logger(loggers)) and trainer.is_global_zero:
        name = mlflow.experiment.get_run(mlflow.run_id).info.run_name
        log.info("MLflow: run '%s': %s", name, run_location(mlflow))
    return metrics


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    disable_primitive_cache()  # else CPU memory grows with the batches evaluated (nn/onednn_cache.py)
    try:
        metrics = evaluate(cfg)
    except (ConfigError, DataError, checkpoints.CheckpointError, ConnectionError) as err:
        raise SystemExit(f"gru-mm-eval: {err}") from None
    log.info("test metrics: %s", metrics)


if __name__ == "__main__":
    main()
