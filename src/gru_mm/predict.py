"""`gru-mm-predict ckpt_path=PATH data_path=FILE`: predictions for new samples, listed in a manifest
(models trained with data=manifest) or held in a features file (data=features).

The samples are decoded exactly as the model's training data was (the same transforms, the training
vocabularies and series statistics, saved in the checkpoint); labels and splits are ignored. Writes
`out` (CSV: id, a probability column per class, predicted). Rows that cannot be
read are left out and listed as `<id>\t<column>\t<problem>`; the exit status is then 1.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from gru_mm import checkpoints
from gru_mm.config import ConfigError, exit_with_status, register_resolvers, silence_known_warnings
from gru_mm.data.sources.base import DataError
from gru_mm.data.sources.held_out import with_model_shapes
from gru_mm.models.build import build_datamodule, retarget_data
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
    train_cfg = checkpoints.trusted_config(predictor.config, path, trust_pickle=cfg.trust_pickle)
    train_cfg = retarget_data(train_cfg, cfg.data_path, cfg.paths.data_dir, cfg.trust_pickle)
    source = build_datamodule(train_cfg).source
    samples, problems = source.as_trained(state, predictor.meta.get("vocab") or {})
    good, wrong = with_model_shapes(samples, predictor.shapes)  # listed, not fatal
    problems += wrong
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
