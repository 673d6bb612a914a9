"""`gru-mm-predict ckpt_path=PATH data_path=FILE`: predictions for new samples, listed in a manifest
(models trained with data=manifest) or held in a features file (data=features).

The samples are decoded exactly as the model's training data was (the same transforms, the training
vocabularies and series statistics, saved in the checkpoint); labels and splits are ignored. Writes `out` (CSV: id, a probability column per class, predicted). Rows that cannot be
read are left out and listed as `<id>\t<column>\t<problem>`; the exit status is then 1.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from gru_mm import checkpoints
from gru_mm.config import ConfigError, exit_with_status, register_resolvers, silence_known_warnings
from gru_mm.data.sources.base import DataError, Problem
from gru_mm.models.build import build_datamodule
from gru_mm.paths import CONF_DIR
from gru_mm.serving.predictor import TIMES, Predictor

register_resolvers()
silence_known_warnings()


def predict(cfg: DictConfig) -> int:
    """Write the predictions; returns the exit status (1 when some rows had problems)."""
    if cfg.ckpt_path == "last" and not cfg.experiment_name:
        raise ConfigError("ckpt_path=last needs experiment_name=NAME to know whose checkpoint to take")
    path = checkpoints.resolve(cfg.ckpt_path, cfg.paths.log_dir, cfg.experiment_name or "")
    predictor = Predictor.from_checkpoint(path, device=cfg.device, batch_size=cfg.batch_size)
    state = {"modalities": sorted(predictor.shapes), **(predictor.meta.get("source_state") or {})}
    train_cfg = OmegaConf.create(predictor.config)
    if "path" not in train_cfg.data.source:  # the built-in data set: nothing new to read
        raise ConfigError(
            f"ckpt_path={path}: gru-mm-predict reads manifests and features files, and this model was trained "
            f"on {train_cfg.data.source._target_.rsplit('.', 1)[-1]}; use gru_mm.serving.predictor.Predictor "
            "on decoded arrays instead"
        )
    data_path = Path(cfg.data_path).expanduser()
    if data_path.suffix.lower() in (".pkl", ".pickle") and cfg.trust_pickle is not True:
        raise ConfigError(f"data_path={data_path} is a pickle, and loading a pickle runs any code inside it, "
                          "so set trust_pickle=true only if you trust where the file came from")
    with open_dict(train_cfg):  # the new file, decoded into this project's cache
        train_cfg.data.source.path = str(data_path)
        if "cache_dir" in train_cfg.data.source:
            train_cfg.data.source.cache_dir = f"{cfg.paths.data_dir}/cache"
        if "trust_pickle" in train_cfg.data.source:  # trusting the training file says nothing of this one
            train_cfg.data.source.trust_pickle = cfg.trust_pickle is True
    source = build_datamodule(train_cfg).source
    samples, problems = source.unlabeled(state, predictor.meta.get("vocab") or {})
    good = []
    for s in samples:  # a series with other columns than in training, say: listed, not fatal
        wrong = [m for m, a in s.modalities.items()
                 if a is not None and tuple(a.shape[1:]) != predictor.shapes[m]]
        for m in wrong:
            shape = list(s.modalities[m].shape[1:])
            problems.append(Problem(s.id, m, "wrong feature size", f"steps of shape {shape}, the model takes "
                                    f"{list(predictor.shapes[m])}"))
        if not wrong:
            good.append(s)
    frame = predictor.predict([{**s.modalities, TIMES: s.timestamps} for s in good])
    frame.insert(0, "id", [s.id for s in good])
    out = Path(cfg.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    for p in problems:
        print(p.line())
    print(f"{len(good)} prediction(s) written to {out}; {len({p.id for p in problems})} row(s) left out")
    return 1 if problems else 0


@hydra.main(config_path=str(CONF_DIR), config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    errors = (ConfigError, DataError, checkpoints.CheckpointError, ValueError)
    exit_with_status("gru-mm-predict", lambda: predict(cfg), errors)


if __name__ == "__main__":
    main()
