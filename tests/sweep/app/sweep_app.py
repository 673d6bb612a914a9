"""A tiny Hydra app for the sweeper tests: returns a quadratic of x and y; can fail, crash, return NaN or
sleep."""

import os
import signal
import time

import hydra
from omegaconf import DictConfig


def quadratic(x: float, y: float) -> float:
    return (x - 1.0) ** 2 + (y + 2.0) ** 2


def start_child_run(cfg: DictConfig):
    """What the training spine's logger does: a child run of the sweep's parent, tagged with the trial."""
    from mlflow.tracking import MlflowClient

    from gru_mm.tracking.store import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    tags = {
        "mlflow.parentRunId": cfg.trial.mlflow_parent_run_id,
        "optuna.study_name": cfg.trial.study_name,
        "optuna.trial_number": str(cfg.trial.number),
    }
    run = client.create_run(experiment.experiment_id, run_name=f"trial-{cfg.trial.number}", tags=tags)
    return client, run.info.run_id


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    child = start_child_run(cfg) if cfg.trial.mlflow_parent_run_id else None
    status = "FAILED"
    try:
        time.sleep(cfg.sleep_s)
        number = cfg.trial.number
        if number in cfg.crash_trials or (cfg.crash_x is not None and cfg.x == cfg.crash_x):
            os.kill(os.getpid(), signal.SIGKILL)  # as an OOM kill or a segfault would: nothing is told
        if number in cfg.fail_trials:
            raise RuntimeError(f"trial {number} fails on purpose")
        if number in cfg.prune_trials:
            import optuna

            raise optuna.TrialPruned(f"trial {number} pruned on purpose")
        value = float("nan") if number in cfg.nan_trials else quadratic(cfg.x, cfg.y)
        if child:
            child[0].log_metric(child[1], "objective", value)
        status = "FINISHED"
        return [value, cfg.x**2] if cfg.two_objectives else value
    finally:
        if child:
            child[0].set_terminated(child[1], status=status)


if __name__ == "__main__":
    main()
