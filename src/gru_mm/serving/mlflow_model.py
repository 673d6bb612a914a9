"""The MLflow model of a run: `mlflow.pyfunc.load_model("runs:/<run id>/model").predict(samples)`.

A pyfunc model in MLflow's loader-module form: the model directory holds a slim copy of the best
checkpoint (weights, config and data meta; no optimizer state) as its data and this package's code,
and loading rebuilds a `Predictor` from it with `torch.load(weights_only=True)`: no pickled code
runs. Why not `mlflow.pytorch.log_model`: its default format (torch.export) cannot trace the GRU
layer (lengths are host-side data), and its pickle format is refused at load time unless
MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path

import torch

import gru_mm
from gru_mm.serving.predictor import Predictor, read_checkpoint

ARTIFACT_PATH = "model"
# What loading the model imports (gru_mm itself travels as code in the model directory).
REQUIREMENTS = (
    "torch",
    "torchvision",
    "torchaudio",
    "pytorch-lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "numpy",
    "pandas",
    "soundfile",
    "mlflow",
)


class PyfuncPredictor:
    """What `mlflow.pyfunc` wraps: predict(list of sample dicts) -> DataFrame (see Predictor.predict)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def predict(self, model_input, params=None):
        return self.predictor.predict(model_input)


def _load_pyfunc(data_path: str) -> PyfuncPredictor:
    """MLflow's loader-module entry point: data_path is the model directory's copy of the checkpoint."""
    return PyfuncPredictor(Predictor.from_checkpoint(data_path))


def requirements() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def save_model(ckpt_path: str | Path, path: str | Path) -> Path:
    """Write the MLflow model directory for a checkpoint to `path` (which must not exist)."""
    import mlflow.pyfunc

    ckpt = read_checkpoint(ckpt_path)  # read once; a bad one fails here, named, not when someone loads it
    Predictor.from_dict(ckpt)  # the weights fit the model its config builds
    with tempfile.TemporaryDirectory() as tmp:
        slim = Path(tmp) / "model.ckpt"
        torch.save({k: ckpt[k] for k in ("state_dict", "gru_mm", "gru_mm_data")}, slim)
        mlflow.pyfunc.save_model(
            str(path),
            loader_module=__name__,
            data_path=str(slim),
            code_paths=[str(Path(gru_mm.__file__).parent)],
            pip_requirements=requirements(),
        )
    return Path(path)


def log_model(mlflow_logger, ckpt_path: str | Path, artifact_path: str = ARTIFACT_PATH) -> None:
    """Save the model and upload it as the run's `model/` artifact (a remote server gets it too)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = save_model(ckpt_path, Path(tmp) / artifact_path)
        mlflow_logger.experiment.log_artifacts(mlflow_logger.run_id, str(local), artifact_path)
