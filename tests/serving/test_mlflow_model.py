"""The MLflow model carries its schema (signature, input example) and registers in the model registry."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.models import Model, get_model_info
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from gru_mm.serving.mlflow_model import log_model, save_model
from gru_mm.serving.predictor import Predictor
from gru_mm.tracking.run import make_mlflow_logger
from serving.serving_testlib import CLASSES, TEXT, meta, samples, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    write_checkpoint(path, meta())
    return path


def test_the_saved_model_has_a_signature_and_an_input_example_that_it_accepts(checkpoint, tmp_path):
    model_dir = save_model(checkpoint, tmp_path / "model")
    info = get_model_info(str(model_dir))
    inputs = info.signature.inputs
    assert inputs.input_names() == ["audio", "video"] and inputs.required_input_names() == []  # all optional
    assert [c.name for c in info.signature.outputs.inputs] == [*CLASSES, "predicted"]
    mlmodel = Model.load(str(model_dir))
    assert mlmodel.metadata["gru_mm_inputs"] == {"audio": "[T, 40]", "video": "[T, 1, 8, 8]"}
    example = mlmodel.load_input_example(str(model_dir))
    assert np.asarray(example["audio"][0]).shape == (2, 40) and example["video"].isna().tolist() == [
        False,
        True,
    ]
    # the schema is enforced at predict time and lets through what Predictor takes, absent modalities included
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    assert (
        loaded.predict(example)["predicted"].tolist()
        == Predictor.from_checkpoint(checkpoint).predict(example)["predicted"].tolist()
    )


def test_a_text_modality_is_shown_as_a_string_in_the_example(tmp_path):
    path = tmp_path / "text.ckpt"
    write_checkpoint(
        path,
        meta(vocab={"text": TEXT}, feature_shapes={"audio": [40], "text": []}),
        "+model/encoder@model.encoders.text=text_embedding",
    )
    model_dir = save_model(path, tmp_path / "model")
    mlmodel = Model.load(str(model_dir))
    assert mlmodel.metadata["gru_mm_inputs"]["text"] == "a string, or token ids [T]"
    assert mlmodel.load_input_example(str(model_dir))["text"][0] == "hello world"


@pytest.mark.slow
def test_the_logged_model_is_a_logged_model_of_the_run_and_a_registered_version(
    checkpoint, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = make_mlflow_logger("registry", root=str(tmp_path))
    uri, run_id = logger._tracking_uri, logger.run_id
    info = log_model(logger, checkpoint, registered_model_name="digits")
    assert info.registered_model_version == 1

    client = MlflowClient(uri)
    (logged,) = client.search_logged_models(experiment_ids=[logger.experiment_id])
    # MLflow 3's LoggedModel of this run, in its experiment
    assert (logged.name, logged.source_run_id, logged.status) == ("model", run_id, LoggedModelStatus.READY)
    (version,) = client.search_model_versions("name='digits'")
    assert (int(version.version), version.run_id, version.status) == (1, run_id, "READY")

    batch = samples(4, seed=3)
    expected = Predictor.from_checkpoint(checkpoint).predict(batch)[CLASSES].to_numpy()
    with _use_tracking_uri(uri):
        for model_uri in (f"runs:/{run_id}/model", "models:/digits/1"):
            assert get_model_info(model_uri).signature.inputs.input_names() == ["audio", "video"]
            got = mlflow.pyfunc.load_model(model_uri).predict(batch)[CLASSES].to_numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-6)
