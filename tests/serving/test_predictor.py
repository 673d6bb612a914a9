"""Predicting from a checkpoint alone, and the MLflow model built from it (loaded through mlflow.pyfunc)."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
import torch

from gru_mm.checkpoints import CheckpointError
from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.serving.mlflow_model import save_model
from gru_mm.serving.predictor import Predictor
from models.model_testlib import SHAPES
from serving.serving_testlib import CLASSES, TEXT
from serving.serving_testlib import meta as _meta
from serving.serving_testlib import samples as _samples
from serving.serving_testlib import write_checkpoint as _checkpoint


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    return path, _checkpoint(path, _meta())


def test_predictions_are_the_modules_own_probabilities(multiclass):
    path, module = multiclass
    samples = _samples()
    frame = Predictor.from_checkpoint(path, batch_size=3).predict(samples)  # 3 batches
    assert list(frame.columns) == [*CLASSES, "predicted"] and len(frame) == len(samples)
    batch = Collate(SHAPES)([Sample(str(i), 0, s) for i, s in enumerate(samples)])
    with torch.no_grad():
        expected = module(batch).softmax(-1).numpy()
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert frame["predicted"].tolist() == [CLASSES[k] for k in expected.argmax(-1)]


def test_a_dataframe_with_empty_cells_is_taken_as_samples_with_absent_modalities(multiclass):
    import pandas as pd

    predictor = Predictor.from_checkpoint(multiclass[0])
    samples = _samples(4)  # samples 0 and 3 have no video
    frame = pd.DataFrame({m: [s.get(m) for s in samples] for m in ("audio", "video")})
    assert frame["video"].isna().tolist() == [True, False, False, True]
    assert predictor.predict(frame).equals(predictor.predict(samples))
    assert predictor.predict([]).columns.tolist() == [*CLASSES, "predicted"]


def test_bad_samples_get_errors_that_name_them(multiclass):
    predictor = Predictor.from_checkpoint(multiclass[0])
    good = _samples(1)[0]
    with pytest.raises(ValueError, match=r"sample 1: unknown modalities \['speech'\]"):
        predictor.predict([good, {"speech": np.zeros((3, 40))}])
    with pytest.raises(
        ValueError, match=r"sample 0, modality 'audio': expected shape \[T, 40\].*got \[5, 13\]"
    ):
        predictor.predict([{"audio": np.zeros((5, 13))}])
    bad = np.zeros((4, 40))
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="sample 0, modality 'audio': holds NaN"):
        predictor.predict([{"audio": bad}])


def test_checkpoints_that_cannot_be_rebuilt_are_refused(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a gru-mm checkpoint"):
        Predictor.from_checkpoint(foreign)
    # weights_only loading: a checkpoint that would need pickled code to load is refused, not run
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"gru_mm": {"config": {}}, "gru_mm_data": _meta(), "state_dict": {}, "x": Path("/")}, pickled)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Predictor.from_checkpoint(pickled)
    old = tmp_path / "old.ckpt"
    meta = _meta()
    del meta["feature_shapes"]
    torch.save({"gru_mm": {"config": {"model": {}}}, "gru_mm_data": meta, "state_dict": {}}, old)
    with pytest.raises(CheckpointError, match="feature shapes"):
        Predictor.from_checkpoint(old)


def test_text_may_be_given_as_a_string(tmp_path):
    meta = _meta(vocab={"text": TEXT}, feature_shapes={"audio": [40], "text": []})
    path = tmp_path / "text.ckpt"
    _checkpoint(path, meta, "+model/encoder@model.encoders.text=text_embedding")
    predictor = Predictor.from_checkpoint(path)
    audio = np.ones((3, 40), dtype=np.float32)
    as_text = predictor.predict([{"audio": audio, "text": "Hello WORLD, zzz!"}])
    # the training tokenizer: lowercased words, punctuation dropped, unknown words -> <unk> (id 1)
    assert as_text.equals(predictor.predict([{"audio": audio, "text": np.array([2, 3, 1])}]))
    assert not as_text.equals(predictor.predict([{"audio": audio, "text": np.array([2, 3])}]))


def test_the_mlflow_model_loads_through_pyfunc_and_predicts_the_same(multiclass, tmp_path):
    path, _ = multiclass
    model_dir = save_model(path, tmp_path / "model")
    assert (model_dir / "MLmodel").is_file() and (model_dir / "code" / "gru_mm" / "serving").is_dir()
    requirements = (model_dir / "requirements.txt").read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements.replace("+cpu", "")
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    samples = _samples(5, seed=1)
    np.testing.assert_allclose(
        loaded.predict(samples)[CLASSES].to_numpy(),
        Predictor.from_checkpoint(path).predict(samples)[CLASSES].to_numpy(),
    )


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_same_predictions(multiclass, tmp_path):
    """The model behind a real `mlflow models serve` scoring server: JSON records in (nested lists, a
    record without video), the Predictor's probabilities out."""
    import json
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    from conftest import BIN
    from tracking.mlflow_testlib import free_port

    path, _ = multiclass
    model_dir = save_model(path, tmp_path / "model")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (the server writes to it while it runs)
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers stop with it
        env=os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"},
    )  # it execs `uvicorn`
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow models serve did not start: {(tmp_path / 'serve.log').read_text()[-2000:]}"
                    )
                time.sleep(0.5)
        samples = _samples(4, seed=2)  # samples 0 and 3 have no video
        records = [{m: a.tolist() for m, a in s.items()} for s in samples]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": records}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    expected = Predictor.from_checkpoint(path).predict(samples)
    got = np.array([[p[c] for c in CLASSES] for p in predictions])
    np.testing.assert_allclose(got, expected[CLASSES].to_numpy(), rtol=1e-5, atol=1e-6)
    assert [p["predicted"] for p in predictions] == expected["predicted"].tolist()
