"""Lightning callbacks that are not Lightning's own."""

from typing import Any

__all__ = ["OptunaPruning"]


def __getattr__(name: str) -> Any:
    # Lazy: a plain training run that imports another callback does not pay for importing optuna.
    if name == "OptunaPruning":
        from gru_mm.callbacks.optuna_pruning import OptunaPruning

        return OptunaPruning
    raise AttributeError(f"module 'gru_mm.callbacks' has no attribute '{name}'")
