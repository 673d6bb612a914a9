"""A Hydra sweeper on Optuna >= 4 with persistent, resumable studies (`hydra/sweeper=optuna`)."""
