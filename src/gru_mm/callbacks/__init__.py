"""Lightning callbacks that are not Lightning's own."""

from gru_mm.callbacks.optuna_pruning import OptunaPruning

__all__ = ["OptunaPruning"]
