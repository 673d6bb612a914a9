"""`features`: precomputed per-step features, variable length, one array per modality and sample.

Two layouts:
- a pickle as MultiBench and MMSA ship CMU-MOSI/MOSEI: {split: {modality: [N, T, F] array or list of
  [T_i, F] arrays, labels: [N, ...], optional `<modality>_lengths`: [N], optional `id`}}, with splits
  named train / valid (or val, dev) / test. Aligned sets pad every modality to one T; the lengths (or,
  without them, trimming all-zero steps at either end) recover each sample's true length.
- a generic `.npz` with keys `<split>/<modality>` ([N, T, F] padded, or [sum T_i, F] concatenated
  with `<split>/<modality>_lengths` [N]), `<split>/labels` and optional `<split>/ids`.
A split missing from the file is cut from train with the seeded split fractions.
With data.storage=store (the default) the samples go into shards on disk (gru_mm.data.store) after the
first read, and later runs read those instead of the file, one sample at a time.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gru_mm.data.batch import Sample
from gru_mm.data.cache import fingerprint
from gru_mm.data.kinds import check_finite
from gru_mm.data.sources.base import (
    SPLITS,
    DataError,
    LoadedSource,
    Problem,
    SampleError,
    check_fractions,
    check_storage,
    seeded_split,
)
from gru_mm.data.store.shard import TMP_PREFIX, IncompleteShard, ShardReader, ShardWriter
from gru_mm.data.store.split import StoreSplit
from gru_mm.data.targets import LabelCoder

log = logging.getLogger("gru_mm.data")
SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "dev": "val", "test": "test"}
LABEL_KEYS = ("regression_labels", "labels", "label", "classification_labels")
NOT_MODALITIES = {"id", "ids", "raw_text", "annotations", "text_bert", *LABEL_KEYS}


class Features(LoadedSource):
    name = "features"

    def __init__(
        self,
        path: str | Path,
        trust_pickle: bool = False,
        task: str = "regression",
        classes: list[str] | None = None,
        num_classes: int | None = None,
        modalities: list[str] | None = None,
        label_key: str | None = None,
        trim_zero_steps: bool = True,
        nan_to_num: bool = False,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        n_mels: int | None = None,  # unused: lets audio encoder configs' ${data.source.n_mels} resolve
        storage: str = "store",
        cache_dir: str | Path | None = None,
    ):
        if path in (None, "", "???"):
            raise DataError("data.path is not set: give the features file (.pkl or .npz)")
        self.path = Path(path).expanduser()
        suffix = self.path.suffix.lower()
        if suffix not in (".pkl", ".pickle", ".npz"):
            raise DataError(
                f"data.path={path}: features must be a .pkl/.pickle (MultiBench/MMSA layout) or a .npz"
            )
        if suffix != ".npz" and trust_pickle is not True:
            raise DataError(
                f"data.path={path} is a pickle, and loading a pickle runs any code inside it, "
                "so set data.trust_pickle=true only if you trust where the file came from"
            )
        self.storage = check_storage(storage)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.task = task
        self.labels = LabelCoder(task, classes, num_classes)
        self.wanted = list(modalities) if modalities else None
        self.label_key = label_key
        self.trim_zero_steps = trim_zero_steps
        self.nan_to_num = nan_to_num
        self.fractions = check_fractions(split_fractions)
        self.split_seed = split_seed
        self._problems: list[Problem] = []
        self._splits: dict[str, list[Sample]] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._train_labels: list[Any] = []
        self._settings = {
            "task": task,
            "classes": classes,
            "num_classes": num_classes,
            "modalities": self.wanted,
            "label_key": label_key,
            "trim_zero_steps": trim_zero_steps,
            "nan_to_num": nan_to_num,
            "split_fractions": self.fractions,
            "split_seed": split_seed,
        }

    @property
    def fingerprint(self) -> str:
        """A digest of the file (path, size, modification time) and the settings that read it."""
        try:
            stat = self.path.stat()
        except OSError:
            raise DataError(f"data.path={self.path}: no such features file") from None
        file = [str(self.path.resolve()), stat.st_size, stat.st_mtime_ns]
        return fingerprint({"source": self.name, "file": file, **self._settings})

    @property
    def kinds(self) -> dict[str, str]:
        """Every modality is a numeric series of precomputed per-step vectors."""
        return {m: "series" for m in self.feature_shapes}

    def _read(self, unsplit_ok: bool = False) -> dict[str, dict[str, Any]]:
        """{split: {key: value}}; with `unsplit_ok` (new data for a trained model) a file without splits
        is one part, ""."""
        if not self.path.is_file():
            raise DataError(f"data.path={self.path}: no such features file")
        try:
            if self.path.suffix.lower() == ".npz":
                return _npz_splits(self.path, unsplit_ok)
            with open(self.path, "rb") as fh:
                data = pickle.load(fh)  # noqa: S301 (the user set data.trust_pickle=true)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as err:
            raise DataError(f"data.path={self.path} cannot be read: {err}") from None
        if isinstance(data, Mapping) and unsplit_ok and not any(k in SPLIT_NAMES for k in data):
            return {"": dict(data)}
        if not isinstance(data, Mapping) or not any(k in SPLIT_NAMES for k in data):
            raise DataError(f"data.path={self.path} is not a dict of splits (train, valid/val, test)")
        return {SPLIT_NAMES[k]: dict(v) for k, v in data.items() if k in SPLIT_NAMES}

    def _modalities(self, part: dict[str, Any], n: int) -> list[str]:
        if self.wanted:
            missing = [m for m in self.wanted if m not in part]
            if missing:
                raise DataError(
                    f"data.source.modalities names {missing}, which {self.path.name} lacks "
                    f"(it has {sorted(part)})"
                )
            return self.wanted
        found = [
            k
            for k, v in part.items()
            if k not in NOT_MODALITIES and not k.endswith("_lengths") and _per_sample(v, n)
        ]
        if not found:
            raise DataError(f"{self.path.name} has no per-sample modality arrays (keys: {sorted(part)})")
        return sorted(found)

    def _labels(self, part: dict[str, Any], split: str) -> Any:
        keys = [self.label_key] if self.label_key else [k for k in LABEL_KEYS if k in part]
        if not keys or keys[0] not in part:
            raise DataError(
                f"{self.path.name} split {split!r} has no labels (looked for {keys or list(LABEL_KEYS)}); "
                "name the key with data.source.label_key"
            )
        return part[keys[0]]

    def load(self) -> dict[str, list[Sample]]:
        if self._splits is not None:
            return self._splits
        if self.storage == "store":
            self._splits = self._from_store()
            return self._splits
        return self._read_all()

    # --- the store (data.storage=store) -----------------------------------------------------------
    def _store_path(self) -> Path:
        root = self.cache_dir
        if root is None:  # no cache asked for: a temporary store, removed with this source
            root = Path(tempfile.mkdtemp(prefix="gru-mm-store-"))
            weakref.finalize(self, shutil.rmtree, root, True)
        return root / "features" / self.fingerprint

    def _from_store(self) -> dict[str, StoreSplit]:
        """The splits from the store: read from the file and written there first if they are not."""
        path = self._store_path()
        for _ in range(2):
            try:
                meta = json.loads((path / "meta.json").read_text())
                shards = {split: ShardReader(path / split) for split in SPLITS}
            except (OSError, ValueError, IncompleteShard):
                self._write_store(path)
                continue
            self._problems = [Problem(*p) for p in meta["problems"]]
            self._shapes = {m: tuple(shape) for m, shape in meta["shapes"].items()}
            self.labels.fit(meta["train_labels"])
            return {
                split: StoreSplit(
                    [s], [(0, j) for j in range(s.rows)], s.targets, list(self._shapes), owner=self
                )
                for split, s in shards.items()
            }
        raise DataError(f"the features store at {path} could not be read after writing it")

    def _write_store(self, path: Path) -> None:
        """Read the file once, write each split's samples to a shard in a temporary folder, rename it
        into place (a killed run leaves only a .tmp- folder), and let go of the samples."""
        splits = self._read_all()
        shutil.rmtree(path, ignore_errors=True)  # an incomplete store (a shard cut short)
        tmp = path.parent / f"{TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for split, samples in splits.items():
                writer = ShardWriter(tmp / split)
                for s in samples:
                    target = s.target.tolist() if isinstance(s.target, np.ndarray) else s.target
                    writer.add(s.id, s.modalities, target=target)
                writer.commit()
            meta = {
                "problems": [[p.id, p.modality, p.kind, p.detail, p.fatal] for p in self._problems],
                "shapes": {m: list(shape) for m, shape in self._shapes.items()},
                "train_labels": self._train_labels,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, default=_json_plain))
            os.rename(tmp, path)
        except OSError:
            if not (path / "meta.json").is_file():  # not another process's copy renamed first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            self._splits = None

    def _read_all(self) -> dict[str, list[Sample]]:
        """Every sample of the file in memory (data.storage=memory, and the store's first run)."""
        parts = self._read()
        if "train" not in parts:
            raise DataError(f"{self.path.name} has no train split")
        rows: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {}
        modalities: list[str] = []
        problems: list[Problem] = []
        for split, part in parts.items():
            labels = self._labels(part, split)
            n = len(labels)
            modalities = modalities or self._modalities(part, n)
            ids = [str(i) for i in part.get("id", part.get("ids", [f"{split}-{i:06d}" for i in range(n)]))]
            rows[split] = []
            for i in range(n):
                values = {m: (part[m][i], _length(part, m, i)) for m in modalities}
                label = labels[i]
                rows[split].append((_plain_id(ids[i]), label, values))
        for split in SPLITS:
            if split not in rows:  # cut the missing split from train, with the seeded fractions
                assigned = seeded_split([r[0] for r in rows["train"]], self.fractions, self.split_seed)
                rows[split] = [r for r in rows["train"] if assigned[r[0]] == split]
                rows["train"] = [r for r in rows["train"] if assigned[r[0]] != split]
        self._train_labels = [_label_value(r[1]) for r in rows["train"]]
        self.labels.fit(self._train_labels)

        samples: dict[str, list[Sample]] = {s: [] for s in SPLITS}
        seen: set[str] = set()
        shapes: dict[str, dict[tuple, int]] = {m: {} for m in modalities}
        for split in SPLITS:
            for rid, label, values in rows[split]:
                if rid in seen:
                    problems.append(Problem(rid, "id", "duplicate id", f"again in {split}"))
                    continue
                seen.add(rid)
                sample, sample_problems = self._sample(rid, label, values, self.labels)
                problems += sample_problems
                if not sample_problems:
                    samples[split].append(sample)
                    for m, a in sample.modalities.items():
                        if a is not None:
                            shapes[m][a.shape[1:]] = shapes[m].get(a.shape[1:], 0) + 1
        self._shapes = {m: max(c, key=c.get) if c else (1,) for m, c in shapes.items()}
        for split in SPLITS:
            keep = []
            for s in samples[split]:
                odd = [m for m, a in s.modalities.items() if a is not None and a.shape[1:] != self._shapes[m]]
                for m in odd:
                    problems.append(
                        Problem(
                            s.id,
                            m,
                            "wrong feature size",
                            f"steps of shape "
                            f"{list(s.modalities[m].shape[1:])}, the others have {list(self._shapes[m])}",
                        )
                    )
                if not odd:
                    keep.append(s)
            samples[split] = keep
            if not keep:
                problems.append(
                    Problem("-", "split", "empty split", f"{split} has no usable samples", fatal=True)
                )
        log.info(
            "features %s: %d samples, modalities %s, %d problems",
            self.path.name,
            sum(len(v) for v in samples.values()),
            modalities,
            len(problems),
        )
        self._problems = problems
        self._splits = samples
        return samples

    def as_trained(
        self, state: Mapping[str, Any], vocab: Mapping[str, list[str]], labels: LabelCoder | None = None
    ) -> tuple[list[Sample], list[Problem]]:
        """Every sample in the file (all its splits, or a file without splits) decoded as in training,
        for a model whose modalities are `state["modalities"]`. Without `labels` (prediction) labels are
        ignored; with them (the trained model's classes) each part needs its labels. Samples with
        problems are left out and listed. (`vocab` is unused: features are numbers already.)"""
        modalities = list(state["modalities"])
        samples, problems, seen = [], [], set()
        for split, part in self._read(unsplit_ok=True).items():
            present = [m for m in modalities if m in part]
            if not present:
                raise DataError(
                    f"{self.path.name} has none of the model's modalities {modalities} "
                    f"(it has {sorted(part)})"
                )
            counts = {m: len(part[m]) for m in present}
            if len(set(counts.values())) > 1:
                raise DataError(
                    f"{self.path.name}: the modalities hold different numbers of samples {counts}"
                )
            n = counts[present[0]]
            absent = sorted(set(modalities) - set(present))
            if absent:
                log.warning("%s lacks %s: absent from all its samples", self.path.name, absent)
            prefix = f"{split}-" if split else ""
            ids = part.get("id", part.get("ids", [f"{prefix}{i:06d}" for i in range(n)]))
            targets = self._labels(part, split) if labels is not None else None
            if targets is not None and len(targets) != n:
                raise DataError(f"{self.path.name} split {split!r} has {len(targets)} labels for {n} samples")
            for i in range(n):
                rid = _plain_id(ids[i])
                if rid in seen:
                    problems.append(Problem(rid, "id", "duplicate id", "ids must be unique"))
                    continue
                seen.add(rid)
                values = {m: (part[m][i], _length(part, m, i)) for m in present}
                sample, row_problems = self._sample(
                    rid, None if targets is None else targets[i], values, labels
                )
                problems += row_problems
                if not row_problems:
                    sample.modalities.update({m: None for m in absent})
                    samples.append(sample)
        return samples, problems

    def _sample(
        self, rid: str, label: Any, values: dict[str, Any], labels: LabelCoder | None
    ) -> tuple[Sample, list[Problem]]:
        """One sample from its raw label (encoded by `labels`; None: unlabeled) and (array, length) per
        modality."""
        problems, arrays, target = [], {}, None
        try:
            target = None if labels is None else labels.encode(_label_value(label))
        except SampleError as err:
            problems.append(Problem(rid, "label", err.kind, err.detail))
        for m, (raw, length) in values.items():
            try:
                arrays[m] = self._array(raw, length)
            except SampleError as err:
                problems.append(Problem(rid, m, err.kind, err.detail))
        return Sample(rid, target, arrays), problems

    def _array(self, raw: Any, length: int | None) -> np.ndarray | None:
        try:
            a = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError):
            raise SampleError("non-numeric values", f"{type(raw).__name__}") from None
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise SampleError("wrong array rank", f"shape {list(a.shape)}, expected [T, F]")
        if self.nan_to_num:
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        if length is not None:
            if not 0 <= length <= len(a):
                raise SampleError("length out of range", f"length {length} for {len(a)} steps")
            a = a[:length]
        elif self.trim_zero_steps:
            nonzero = np.flatnonzero(np.abs(a).sum(1) > 0)
            a = a[nonzero[0] : nonzero[-1] + 1] if len(nonzero) else a[:0]
        check_finite(a)
        return a if len(a) else None  # no steps: the modality is absent from this sample


def _json_plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else str(value)


def _per_sample(value: Any, n: int) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim >= 2 and value.shape[0] == n and np.issubdtype(value.dtype, np.number)
    return isinstance(value, list) and len(value) == n and all(isinstance(v, np.ndarray) for v in value[:3])


def _length(part: dict[str, Any], modality: str, i: int) -> int | None:
    lengths = part.get(f"{modality}_lengths")
    return None if lengths is None else int(lengths[i])


def _label_value(label: Any) -> Any:
    """MOSI labels come as [1, 1] arrays per sample: a single value becomes a scalar."""
    if isinstance(label, np.ndarray | list):
        a = np.asarray(label)
        if a.size == 1:
            return a.reshape(()).item()
        return a.reshape(-1).tolist()
    return label.item() if isinstance(label, np.generic) else label


def _plain_id(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return "_".join(str(v) for v in value.reshape(-1))
    return str(value)


def _npz_splits(path: Path, unsplit_ok: bool = False) -> dict[str, dict[str, Any]]:
    """`<split>/<key>` arrays -> {split: {key: value}}; concatenated modalities are cut by their lengths.
    With `unsplit_ok`, a file whose keys are all plain names is one part, ""."""
    with np.load(path, allow_pickle=False) as f:
        flat = {k: f[k] for k in f.files}
    parts: dict[str, dict[str, Any]] = {}
    unsplit = unsplit_ok and not any("/" in k for k in flat)
    for key, value in flat.items():
        split, _, name = ("", "", key) if unsplit else key.partition("/")
        if not unsplit and (split not in SPLIT_NAMES or not name):
            raise DataError(f"{path.name} key {key!r} is not <split>/<name> with split train, val or test")
        parts.setdefault(SPLIT_NAMES.get(split, split), {})[name] = value
    for part in parts.values():
        for name in list(part):
            lengths = part.get(f"{name}_lengths")
            if lengths is not None and part[name].ndim == 2:  # concatenated: cut into samples
                if int(lengths.sum()) != len(part[name]):
                    raise DataError(
                        f"{path.name}: {name}_lengths sum to {int(lengths.sum())}, "
                        f"but {name} has {len(part[name])} steps"
                    )
                part[name] = np.split(part[name], np.cumsum(lengths)[:-1])
                del part[f"{name}_lengths"]
    return parts
