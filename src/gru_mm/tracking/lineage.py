"""Lineage: which data a run trained on, as the MLflow run's input dataset.

The digest is the data's fingerprint (the manifest's rows, each media file's path, size and modification
time, and every decode setting: `SequenceDataModule.fingerprint`), so two runs on the same data show the
same digest in the MLflow UI (the run's "Datasets used"), and a changed file or setting a new one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from gru_mm.data.cache import fingerprint as settings_digest

log = logging.getLogger("gru_mm.tracking")
# MLflow stores a dataset digest in 36 characters at most; the whole fingerprint goes in an input tag
DIGEST_CHARS = 32
FINGERPRINT_TAG = "gru_mm.fingerprint"


def data_fingerprint(datamodule: Any) -> str:
    """The datamodule's fingerprint; for a source that has none, a digest of its settings and, where it
    reads a file, that file's path, size and modification time (not its media files': coarser)."""
    found = getattr(datamodule, "fingerprint", None)
    if isinstance(found, str) and found:
        return found
    source = getattr(datamodule, "source", datamodule)
    settings = {k: _plain_value(v) for k, v in vars(source).items() if not k.startswith("_") and _plain(v)}
    path = data_path(datamodule)
    stat = Path(path).stat() if path and Path(path).is_file() else None
    files = [path, stat.st_size, stat.st_mtime_ns] if stat else [path]
    return settings_digest({"source": type(source).__name__, "settings": settings, "file": files})


def data_path(datamodule: Any) -> str | None:
    """Where the data comes from: the manifest (data.path), else the source's own path or cache folder."""
    source = getattr(datamodule, "source", None)
    for owner, key in ((datamodule, "path"), (source, "path"), (source, "cache_dir")):
        value = getattr(owner, key, None)
        if value:
            return str(Path(value).resolve())
    return None


def data_name(datamodule: Any) -> str:
    """The manifest's file name without its suffix, else the source's name (avdigits, features)."""
    path = getattr(datamodule, "path", None)
    if path:
        return Path(path).stem
    source = getattr(datamodule, "source", None)
    return str(getattr(source, "name", None) or type(source).__name__.lower())


def training_dataset(datamodule: Any) -> tuple[MetaDataset, str]:
    """(the MLflow Dataset of a datamodule's data, its whole fingerprint)."""
    full = data_fingerprint(datamodule)
    with warnings.catch_warnings():  # MLflow registers its local source twice and warns that it is ambiguous
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(data_path(datamodule) or data_name(datamodule))
    return MetaDataset(source, name=data_name(datamodule), digest=full[:DIGEST_CHARS]), full


def log_training_data(logger: Any, datamodule: Any) -> str:
    """Log the data as the run's input dataset with context "training" (what `mlflow.log_input(dataset,
    context="training")` does, through the logger's client and run); returns the digest logged."""
    dataset, full = training_dataset(datamodule)
    tags = [InputTag(key=MLFLOW_DATASET_CONTEXT, value="training"), InputTag(key=FINGERPRINT_TAG, value=full)]
    sizes = _split_sizes(datamodule)
    if sizes:
        tags.append(InputTag(key="gru_mm.samples", value=json.dumps(sizes)))
    entity = DatasetEntity(**dataset.to_dict())
    logger.experiment.log_inputs(logger.run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])
    log.info(
        "MLflow: data '%s' (digest %s) logged as the run's training dataset", dataset.name, dataset.digest
    )
    return dataset.digest


def _split_sizes(datamodule: Any) -> dict[str, int]:
    source = getattr(datamodule, "source", None)
    try:
        return {split: len(source.split(split)) for split in ("train", "val", "test")}
    except Exception:  # a source without splits (a held-out file): the sizes are only extra detail
        return {}


def _plain(value: Any) -> bool:
    """JSON-able settings (numbers, strings, lists and dicts of them): what a fallback digest may hash."""
    try:
        json.dumps(value, default=_refuse)
    except TypeError:
        return False
    return True


def _plain_value(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_refuse))


def _refuse(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(type(value).__name__)
