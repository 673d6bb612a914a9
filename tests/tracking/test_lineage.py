"""The data's fingerprint as the MLflow run's input dataset: same data, same digest; a changed file or
setting, a new one. Real manifests of real files, real runs in a sqlite store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger

from conftest import run_cli
from data.byod_files import make_corpus, write_wav
from gru_mm.data.datamodule import SequenceDataModule
from gru_mm.data.sources.manifest import Manifest
from gru_mm.tracking.lineage import DIGEST_CHARS, FINGERPRINT_TAG, data_fingerprint, log_training_data

SMALL = {"audio": {"sample_rate": 8000, "n_fft": 256, "hop_length": 128}, "frames": {"height": 8, "width": 8}}


def logged_dataset(manifest: Path, store: str, **settings) -> dict:
    """Validate the manifest as training does, log it to a new run, and read back what the run holds."""
    source = Manifest(manifest, cache_dir=manifest.parent / "cache", **(SMALL | settings))
    datamodule = SequenceDataModule(source, path=str(manifest))
    datamodule.validate()
    logger = MLFlowLogger(experiment_name="lineage", tracking_uri=store)
    digest = log_training_data(logger, datamodule)
    (used,) = MlflowClient(store).get_run(logger.run_id).inputs.dataset_inputs
    tags = {t.key: t.value for t in used.tags}
    return {"returned": digest, "fingerprint": datamodule.fingerprint, "dataset": used.dataset, "tags": tags}


def test_same_data_same_digest_and_a_changed_file_or_setting_a_new_one(tmp_path):
    manifest, _ = make_corpus(tmp_path / "data", n=12, modalities=("audio", "frames"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = logged_dataset(manifest, store)
    dataset = first["dataset"]
    assert dataset.digest == first["returned"] == first["fingerprint"][:DIGEST_CHARS]
    assert dataset.name == "manifest" and str(manifest) in dataset.source  # the manifest file, by path
    assert first["tags"]["mlflow.data.context"] == "training"
    assert first["tags"][FINGERPRINT_TAG] == first["fingerprint"]

    second = logged_dataset(manifest, store)  # another run on the same files: visibly the same data
    assert second["dataset"].digest == dataset.digest

    # one audio file rewritten in place (same name, other content and size): other data, another digest
    audio = tmp_path / "data" / "audio" / "0.wav"
    before = audio.stat()
    write_wav(audio, seconds=0.5, freq=900.0)
    os.utime(audio, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    changed = logged_dataset(manifest, store)
    assert changed["dataset"].digest != dataset.digest
    # a decode setting changes what is trained on as much as a file does
    other_setting = logged_dataset(manifest, store, n_mels=20)
    assert other_setting["dataset"].digest not in (dataset.digest, changed["dataset"].digest)


class _SourceWithoutFingerprint:
    """A source of one's own that offers no fingerprint: its settings and its file stand in."""

    name = "mine"

    def __init__(self, path: Path, rate: int):
        self.path, self.rate = path, rate


def test_a_source_without_a_fingerprint_gets_one_from_its_settings_and_file(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("id,label\na,1\n")
    first = data_fingerprint(SequenceDataModule(_SourceWithoutFingerprint(table, 16000)))
    assert first == data_fingerprint(SequenceDataModule(_SourceWithoutFingerprint(table, 16000)))
    assert first != data_fingerprint(SequenceDataModule(_SourceWithoutFingerprint(table, 8000)))
    table.write_text("id,label\na,1\nb,2\n")  # the file itself changed (size, modification time)
    assert first != data_fingerprint(SequenceDataModule(_SourceWithoutFingerprint(table, 16000)))


@pytest.mark.slow
def test_training_runs_log_their_data_as_the_runs_dataset(tmp_path):
    args = [
        "debug=smoke",
        "test=false",
        "log_model=false",
        "~callbacks.system_metrics",
        f"paths.root={tmp_path}",
    ]
    for _ in range(2):
        result = run_cli("gru-mm-train", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("avdigits").experiment_id])
    assert len(runs) == 2
    used = [run.inputs.dataset_inputs for run in runs]
    assert all(len(u) == 1 for u in used)
    (a,), (b,) = used
    assert a.dataset.name == b.dataset.name == "avdigits"
    assert a.dataset.digest == b.dataset.digest
    tags = {t.key: t.value for t in a.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags[FINGERPRINT_TAG][:DIGEST_CHARS] == a.dataset.digest  # as much as MLflow keeps
