"""`gru-mm-validate-data data=manifest data.path=FILE`: read every sample as training would; list the
problems.

Prints `<id>\t<column>\t<problem>` per problem, then a summary line; exits 1 if there is any problem.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, open_dict

from gru_mm.config import ConfigError, check_config, exit_with_status, register_resolvers
from gru_mm.data.datamodule import DataReport
from gru_mm.data.sources.base import SPLITS, DataError
from gru_mm.data.validation import summary
from gru_mm.models.build import build_datamodule
from gru_mm.paths import CONF_DIR

register_resolvers()


def validate(cfg: DictConfig) -> int:
    """Print the problems; returns the exit status."""
    check_config(cfg)
    with open_dict(cfg):
        cfg.data.on_error = "skip"  # collect every problem instead of stopping at the list
    datamodule = build_datamodule(cfg)
    datamodule.source.load()
    problems = list(getattr(datamodule.source, "problems", []))
    for p in problems:
        print(p.line())
    n = sum(len(datamodule.source.split(s)) for s in SPLITS)
    print(summary(DataReport(problems, sorted({p.id for p in problems})), n))
    return 1 if problems else 0


@hydra.main(config_path=str(CONF_DIR), config_name="validate_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    exit_with_status("gru-mm-validate-data", lambda: validate(cfg), (ConfigError, DataError))


if __name__ == "__main__":
    main()
