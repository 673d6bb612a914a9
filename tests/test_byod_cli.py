"""Bring your own data, end to end through the console scripts: validate, fail or skip, train each
adapter and task."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli
from data.byod_files import make_corpus, write_manifest, write_mosi_pickle, write_npz

pytestmark = pytest.mark.slow
TINY = [
    "trainer.max_epochs=1",
    "model.gru.hidden_size=8",
    "model.head.hidden=8",
    "data.batch_size=8",
    "trainer.enable_progress_bar=false",
]
MANIFEST_SMALL = [
    "data.source.audio.sample_rate=8000",
    "data.source.audio.n_fft=256",
    "data.source.audio.hop_length=128",
    "data.source.frames.height=8",
    "data.source.frames.width=8",
]
ENCODERS = [
    "+model/encoder@model.encoders.frames=frame_cnn_rgb",
    "+model/encoder@model.encoders.text=text_embedding",
    "+model/encoder@model.encoders.series=series_linear",
]


def _validate(*args: str):
    return run_cli("python", "-m", "gru_mm.validate_data", *args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A clean manifest and one whose s013 (train) names a missing audio file."""
    root = tmp_path_factory.mktemp("byod")
    clean, rows = make_corpus(root / "media", n=18)
    rows[13]["audio"] = "audio/gone.wav"
    bad = write_manifest(root / "media" / "with-problem.csv", rows)
    return root, clean, bad


def test_validate_data_lists_problems_and_exits_1(corpus):
    root, clean, bad = corpus
    result = _validate(f"data.path={bad}", f"paths.root={root}", *MANIFEST_SMALL)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "s013\taudio\tmissing file: audio/gone.wav"
    assert lines[1] == "17 usable sample(s), 1 problem(s) in 1 sample(s): 1 missing file"
    result = _validate(f"data.path={clean}", f"paths.root={root}", *MANIFEST_SMALL)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert result.stdout.strip() == "18 usable sample(s), 0 problem(s) in 0 sample(s)"
    result = _validate(f"data.path={root / 'nope.csv'}", f"paths.root={root}")
    assert result.returncode == 1 and "no such manifest file" in result.stderr


def test_training_refuses_bad_data_listing_it(corpus):
    root, _, bad = corpus
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={bad}",
        f"paths.root={root / 'fail'}",
        "logger=csv",
        *TINY,
        *MANIFEST_SMALL,
        *ENCODERS,
    )
    assert result.returncode != 0
    assert f"gru-mm-train: data.path={bad} has 1 data problem(s)" in result.stderr
    assert "s013\taudio\tmissing file: audio/gone.wav" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def skip_run(corpus):
    """A model trained on the manifest with a problem row, all four modalities, data.on_error=skip."""
    root, _, bad = corpus
    project = root / "skip"
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={bad}",
        "data.on_error=skip",
        f"paths.root={project}",
        "experiment_name=byod",
        *TINY,
        *MANIFEST_SMALL,
        *ENCODERS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("byod").experiment_id])
    return project, client, run


def test_manifest_multiclass_skips_bad_samples_and_logs_them(skip_run):
    project, client, run = skip_run
    assert run.data.metrics["data/skipped_samples"] == 1
    assert 0 <= run.data.metrics["test/acc"] <= 1
    local = client.download_artifacts(run.info.run_id, "data/problems.tsv", str(project))
    assert Path(local).read_text() == "id\tcolumn\tproblem\ns013\taudio\tmissing file: audio/gone.wav\n"


def test_predict_decodes_new_rows_as_in_training(corpus, skip_run):
    """gru-mm-predict on the same manifest: the test rows get the predictions that made the run's test
    accuracy (same decoders, vocabulary and series statistics), and the bad row is listed, not fatal."""
    root, _, bad = corpus
    project, _, run = skip_run
    ckpt = next(project.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    out = root / "predictions" / "new.csv"
    result = run_cli(
        "gru-mm-predict", f"ckpt_path={ckpt}", f"data_path={bad}", f"out={out}", f"paths.root={project}"
    )
    assert result.returncode == 1, result.stderr[-3000:]  # 1: a row was left out
    assert result.stdout.splitlines()[0] == "s013\taudio\tmissing file: audio/gone.wav"
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["id", "high", "low", "mid", "predicted"]  # the training classes
    assert len(frame) == 17 and "s013" not in set(frame["id"])
    manifest = pd.read_csv(bad, dtype=str).set_index("id")
    test = manifest[manifest["split"] == "test"]
    predicted = frame.set_index("id").loc[test.index, "predicted"]
    assert (predicted == test["label"]).mean() == pytest.approx(run.data.metrics["test/acc"])
    # every row's probabilities equal the model's on the samples as training decoded them
    import torch
    from omegaconf import OmegaConf

    from gru_mm.models.build import build_datamodule
    from gru_mm.serving.predictor import Predictor

    config = OmegaConf.create(torch.load(ckpt, weights_only=True)["gru_mm"]["config"])
    source = build_datamodule(config).source
    trained = [s for split in ("train", "val", "test") for s in source.split(split)]
    expected = Predictor.from_checkpoint(ckpt).predict([dict(s.modalities) for s in trained])
    classes = ["high", "low", "mid"]
    got = frame.set_index("id").loc[[s.id for s in trained], classes].to_numpy()
    np.testing.assert_allclose(got, expected[classes].to_numpy(), rtol=1e-5, atol=1e-6)
    # a model not trained on a manifest is refused with one sentence
    result = run_cli("gru-mm-predict", f"ckpt_path={root / 'nope.ckpt'}", f"data_path={bad}")
    assert result.returncode == 1 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_eval_on_another_labeled_manifest_tests_every_row_as_training_decoded_it(corpus, skip_run):
    """gru-mm-eval data.path=...: the run's test rows in a new manifest (their split column says train,
    which is ignored) reproduce the run's test accuracy; a row with a class the model never saw is a
    problem that stops the run, or is left out with data.on_error=skip."""
    root, _, bad = corpus
    project, client, run = skip_run
    ckpt = next(project.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    test = pd.read_csv(bad, dtype=str, keep_default_na=False).query("split == 'test'").to_dict("records")
    rows = [{**r, "split": "train"} for r in test] + [{**test[0], "id": "x1", "label": "huge"}]
    held = write_manifest(root / "media" / "held-out.csv", rows)
    common = [
        "gru-mm-eval",
        f"ckpt_path={ckpt}",
        f"data.path={held}",
        f"paths.root={project}",
        "run_name=held-out",
    ]
    refused = run_cli(*common)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        "x1\tlabel\tunknown label: 'huge' is not one of the classes ['high', 'low', 'mid']" in refused.stderr
    )
    result = run_cli(*common, "data.on_error=skip")
    assert result.returncode == 0, result.stderr[-3000:]
    (held_run,) = [
        r
        for r in client.search_runs([run.info.experiment_id])
        if r.info.run_name == "held-out" and r.info.status == "FINISHED"
    ]
    assert held_run.data.tags["gru_mm.eval_data"] == str(held)
    assert held_run.data.metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"])
    assert "test_ablation/audio/acc" in held_run.data.metrics  # the whole evaluation, on the new rows


def test_manifest_jsonl_multilabel(tmp_path):
    path, _ = make_corpus(
        tmp_path / "media", n=15, task="multilabel", fmt="jsonl", modalities=("text", "series")
    )
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={path}",
        "data.source.task=multilabel",
        f"paths.root={tmp_path}",
        "logger=csv",
        "optimized_metric=val/f1",
        "callbacks.model_checkpoint.monitor=val/f1",
        *TINY,
        *ENCODERS[1:],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/f1" in result.stdout


def test_manifest_several_regression_targets_train_and_predict(tmp_path):
    """Two targets per sample (a JSON list each): one output per target, and gru-mm-predict's columns
    reproduce the run's test MAE."""
    path, rows = make_corpus(
        tmp_path / "media", n=18, task="regression", fmt="jsonl", targets=2, modalities=("series", "text")
    )
    project = tmp_path / "run"
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={path}",
        "data.source.task=regression",
        "data.source.classes=[hr,sbp]",
        f"paths.root={project}",
        "experiment_name=targets",
        "optimized_metric=val/mae",
        "callbacks.model_checkpoint.monitor=val/mae",
        "callbacks.model_checkpoint.mode=min",
        *TINY,
        *ENCODERS[1:],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("targets").experiment_id])
    assert {"test/mae", "test/corr"} <= set(run.data.metrics)
    ckpt = next(project.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    out = tmp_path / "pred.csv"
    result = run_cli(
        "gru-mm-predict", f"ckpt_path={ckpt}", f"data_path={path}", f"out={out}", f"paths.root={project}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(out).set_index("id")
    assert list(frame.columns) == ["predicted_hr", "predicted_sbp"]
    test = [r for r in rows if r["split"] == "test"]
    errors = [
        abs(frame.loc[r["id"], f"predicted_{name}"] - r["label"][k])
        for r in test
        for k, name in enumerate(["hr", "sbp"])
    ]
    assert sum(errors) / len(errors) == pytest.approx(run.data.metrics["test/mae"], rel=1e-4)


def test_series_with_unmeasured_values_train_and_predict_with_missing_mask(tmp_path):
    path, rows = make_corpus(tmp_path / "media", n=18, modalities=("series", "text"))
    for r in rows:  # an empty cell in every series CSV
        file = tmp_path / "media" / r["series"]
        if file.suffix == ".csv":
            lines = file.read_text().splitlines()
            lines[1] = ",".join(c if k != 2 else "" for k, c in enumerate(lines[1].split(",")))
            file.write_text("\n".join(lines) + "\n")
    common = ["data=manifest", f"data.path={path}", "logger=csv", *TINY, *ENCODERS[1:]]
    refused = run_cli("gru-mm-train", *common, f"paths.root={tmp_path / 'a'}")
    assert refused.returncode != 0 and "\tseries\tNaN or infinite values" in refused.stderr
    result = run_cli(
        "gru-mm-train", *common, "data.source.series.missing=mask", f"paths.root={tmp_path / 'b'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = next((tmp_path / "b").glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    out = tmp_path / "pred.csv"
    result = run_cli(
        "gru-mm-predict",
        f"ckpt_path={ckpt}",
        f"data_path={path}",
        f"out={out}",
        f"paths.root={tmp_path / 'b'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(out.read_text().strip().splitlines()) == 1 + 18


def test_features_pickle_regression(tmp_path):
    path = write_mosi_pickle(tmp_path / "mosi.pkl")
    common = ["data=features", f"data.path={path}", f"paths.root={tmp_path}", "logger=csv"]
    refused = run_cli("gru-mm-train", *common, *TINY)
    assert refused.returncode != 0 and "set data.trust_pickle=true only if you trust" in refused.stderr
    result = run_cli(
        "gru-mm-train",
        *common,
        "data.trust_pickle=true",
        "optimized_metric=val/mae",
        "callbacks.model_checkpoint.monitor=val/mae",
        "callbacks.model_checkpoint.mode=min",
        "model/encoder@model.encoders.audio=features_linear",
        "+model/encoder@model.encoders.text=features_linear",
        "+model/encoder@model.encoders.vision=features_linear",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("test/mae", "test/corr", "test/acc2", "test/acc2_nonzero"):
        assert name in result.stdout
    # gru-mm-predict on the same pickle: every split's samples, and the test ids reproduce the test MAE
    ckpt = next(tmp_path.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    out = tmp_path / "pred.csv"
    predict = [
        "gru-mm-predict",
        f"ckpt_path={ckpt}",
        f"data_path={path}",
        f"out={out}",
        f"paths.root={tmp_path}",
    ]
    refused = run_cli(*predict)  # trusting the training pickle says nothing of this file
    assert refused.returncode == 1 and "so set trust_pickle=true only if you trust" in refused.stderr
    result = run_cli(*predict, "trust_pickle=true")
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(out).set_index("id")
    assert len(frame) == 24 + 8 + 8 and list(frame.columns) == ["predicted"]
    with open(path, "rb") as fh:
        test = pickle.load(fh)["test"]
    mae = np.abs(frame.loc[list(test["id"]), "predicted"].to_numpy() - test["regression_labels"]).mean()
    metrics = pd.read_csv(next(tmp_path.glob("logs/train/runs/*/**/metrics.csv")))
    assert mae == pytest.approx(metrics["test/mae"].dropna().iloc[-1], rel=1e-4)


def test_features_npz_binary(tmp_path):
    path = write_npz(tmp_path / "feats.npz")
    result = run_cli(
        "gru-mm-train",
        "data=features",
        f"data.path={path}",
        "data.source.task=binary",
        f"paths.root={tmp_path}",
        "logger=csv",
        "+model/encoder@model.encoders.series=series_linear",
        "loss.class_weights=balanced",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/auroc" in result.stdout
    with np.load(path) as f:  # positives weigh negatives / positives of the training split
        labels = f["train/labels"]
    weight = round(float((labels == 0).sum() / (labels == 1).sum()), 4)
    assert f"loss.class_weights=balanced: [{weight}]" in result.stdout + result.stderr
    out = result.stdout + result.stderr  # the per-class table of the test split: 8 samples, 2 classes
    table = out[out.index("| class | precision | recall | f1 | support |") :].splitlines()[2:4]
    assert sum(int(line.strip("| ").split(" | ")[-1]) for line in table) == 8
    # new samples in an npz without splits: predicted as the model predicts them in Python
    from gru_mm.data.sources.features import Features
    from gru_mm.serving.predictor import Predictor

    with np.load(path) as f:
        new = tmp_path / "new.npz"
        np.savez(new, series=f["test/series"], series_lengths=f["test/series_lengths"], ids=f["test/ids"])
    ckpt = next(tmp_path.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    out = tmp_path / "pred.csv"
    result = run_cli(
        "gru-mm-predict", f"ckpt_path={ckpt}", f"data_path={new}", f"out={out}", f"paths.root={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"8 prediction(s) written to {out}; 0 row(s) left out"
    got = pd.read_csv(out)
    test = Features(path, task="binary").split("test")
    expected = Predictor.from_checkpoint(ckpt).predict([dict(s.modalities) for s in test])
    assert list(got["id"]) == [s.id for s in test]
    np.testing.assert_allclose(
        got.drop(columns="id").select_dtypes("number").to_numpy(),
        expected.select_dtypes("number").to_numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
