"""The MLflow model of a run: `mlflow.pyfunc.load_model("runs:/<run id>/model").predict(samples)`.

A pyfunc model in MLflow's loader-module form: the model directory holds a slim copy of the best
checkpoint (weights, config and data meta; no optimizer state) as its data and this package's code,
and loading rebuilds a `Predictor` from it with `torch.load(weights_only=True)`: no pickled code
runs. Why not `mlflow.pytorch.log_model`: its default format (torch.export) cannot trace the GRU
layer (lengths are host-side data), and its pickle format is refused at load time unless
MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set.

The signature has one optional column per modality. Its type is `Any`: a cell holds a nested list
[T, *feature shape] (text: a string or token ids), and a sample without a modality arrives from JSON
records as NaN, which MLflow's Array type refuses. The shapes are in the input example and in the
MLmodel file's `metadata.gru_mm_inputs`.
"""

from __future__ import annotations

import logging
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import gru_mm
from gru_mm.serving.predictor import Predictor, read_checkpoint

log = logging.getLogger("gru_mm.serving")
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


def input_shapes(predictor: Predictor) -> dict[str, str]:
    """modality -> what a cell holds, for people reading the MLmodel file."""
    shapes = {m: "[" + ", ".join(["T", *map(str, s)]) + "]" for m, s in predictor.shapes.items()}
    return shapes | {m: f"a string, or token ids {shapes[m]}" for m in predictor.vocabs}


def input_example(predictor: Predictor, steps: int = 2) -> pd.DataFrame:
    """Two samples of `steps` steps, as nested lists; the second lacks the last modality (all are
    optional)."""
    row = {}
    for m, shape in predictor.shapes.items():
        if m in predictor.vocabs:
            words = predictor.vocabs[m].tokens[2 : 2 + steps]  # after <pad> and <unk>
            row[m] = " ".join(words) or "text"
        else:
            row[m] = np.zeros((steps, *shape), dtype=np.float32).tolist()
    rows = [row]
    if len(row) > 1:
        rows.append({**row, list(row)[-1]: None})
    return pd.DataFrame(rows, columns=list(row))


def signature(predictor: Predictor, example: pd.DataFrame):
    """Inputs: an optional `Any` column per modality (see the module doc); outputs: what predict returns."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), m, required=False) for m in predictor.shapes])
    return ModelSignature(
        inputs=inputs, outputs=infer_signature(model_output=predictor.predict(example)).outputs
    )


def _pyfunc_arguments(ckpt_path: str | Path, tmp: str) -> dict[str, Any]:
    """What mlflow.pyfunc.save_model (and Model.log) take for a checkpoint; the slim copy is
    written to tmp."""
    ckpt = read_checkpoint(ckpt_path)  # read once; a bad one fails here, named, not when someone loads it
    predictor = Predictor.from_dict(ckpt)  # the weights fit the model its config builds
    slim = Path(tmp) / "model.ckpt"
    torch.save({k: ckpt[k] for k in ("state_dict", "gru_mm", "gru_mm_data")}, slim)
    example = input_example(predictor)
    return {
        "loader_module": __name__,
        "data_path": str(slim),
        "code_paths": [str(Path(gru_mm.__file__).parent)],
        "pip_requirements": requirements(),
        "signature": signature(predictor, example),
        "input_example": example,
        "metadata": {"gru_mm_inputs": input_shapes(predictor), "gru_mm_task": predictor.task},
    }


def save_model(ckpt_path: str | Path, path: str | Path) -> Path:
    """Write the MLflow model directory for a checkpoint to `path` (which must not exist)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(str(path), **_pyfunc_arguments(ckpt_path, tmp))
    return Path(path)


def log_model(
    mlflow_logger, ckpt_path: str | Path, name: str = ARTIFACT_PATH, registered_model_name: str | None = None
):
    """Log the model as an MLflow 3 LoggedModel of the logger's run (`runs:/<run id>/<name>` loads it),
    registered as a new version of `registered_model_name` when given. Returns MLflow's ModelInfo."""
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.models import Model
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    uri, run_id = mlflow_logger._tracking_uri, mlflow_logger.run_id
    # Model.log reads the tracking and registry URI from MLflow's global state.
    with tempfile.TemporaryDirectory() as tmp, _use_tracking_uri(uri):
        arguments = _pyfunc_arguments(ckpt_path, tmp)  # a bad checkpoint fails before MLflow records anything
        # Created here: Model.log, with no active run, would put it in the Default experiment (where
        # `runs:/<run id>/model` does not look). Model.log marks it READY, or FAILED if it raises.
        logged = MlflowClient(uri).create_logged_model(
            mlflow_logger.experiment_id, name=name, source_run_id=run_id
        )
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            registered_model_name=registered_model_name,
            **arguments,
        )
    if info.registered_model_version:
        log.info(
            "MLflow model registered: %s version %s", registered_model_name, info.registered_model_version
        )
    return info
