"""`manifest`: the user's own recordings, listed one sample per row in a CSV, JSONL or Parquet file.

Columns: `id`, `label`, optional `split`, and one column per modality. A column named after a modality
kind (audio, frames, text, series: see `gru_mm.data.kinds`) is of that kind; other modality columns are
declared in `columns` (name -> kind). Every value is read through its kind whether training or validating,
so a file that validates is a file that trains. Decoded arrays go into the store (gru_mm.data.store), which
is also the cache: a second run decodes nothing, and a changed file or setting decodes only what it changes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gru_mm.data import kinds as modality_kinds
from gru_mm.data.batch import Sample
from gru_mm.data.cache import FeatureCache, fingerprint
from gru_mm.data.kinds import Cell, ModalityKind, Vocabulary
from gru_mm.data.kinds.base import FileKind
from gru_mm.data.sources.base import (
    SPLITS,
    DataError,
    LoadedSource,
    Problem,
    SampleError,
    check_fractions,
    check_storage,
    launch_rank,
    seeded_split,
)
from gru_mm.data.store.build import Decoded, ShardPlan, Store, StoreCache
from gru_mm.data.store.shard import FORMAT, ShardReader
from gru_mm.data.store.split import StoreSplit, prepare_with
from gru_mm.data.targets import LabelCoder, is_empty

log = logging.getLogger("gru_mm.data")
TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


class Manifest(LoadedSource):
    name = "manifest"

    def __init__(
        self,
        path: str | Path,
        cache_dir: str | Path | None = None,
        task: str = "multiclass",
        classes: list[str] | None = None,
        num_classes: int | None = None,
        label_separator: str = ";",
        columns: Mapping[str, str] | None = None,
        required: list[str] | None = None,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        n_mels: int | None = None,
        decode_threads: int | None = None,
        storage: str = "store",
        decode_processes: int | None = None,
        shard_rows: int = 256,
        **kind_settings: Mapping | None,
    ):
        """`kind_settings`: each modality kind's settings by its name (audio={...}, series={...}, ...).
        `storage`: store (decoded into shards on disk, read by index) or memory (every decoded array in
        RAM, with the per-file .npz cache: the path before the store, kept to compare with).

        Everything here checks config only: no file is opened until a property or load() needs it."""
        self.storage = check_storage(storage)
        for key, value in (("decode_processes", decode_processes), ("shard_rows", shard_rows)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DataError(
                    f"data.source.{key} must be {'null or ' * (key != 'shard_rows')}an integer >= 1, "
                    f"got {value!r}"
                )
        self.decode_processes = decode_processes or min(8, len(os.sched_getaffinity(0)))
        self.shard_rows = shard_rows
        if decode_threads is not None and (
            isinstance(decode_threads, bool) or not isinstance(decode_threads, int) or decode_threads < 1
        ):
            raise DataError(
                f"data.source.decode_threads must be null or an integer >= 1, got {decode_threads!r}"
            )
        self.decode_threads = decode_threads or min(8, len(os.sched_getaffinity(0)))
        if path in (None, "", "???"):
            raise DataError(
                "data.path is not set: give the manifest file, e.g. data.path=recordings/manifest.csv"
            )
        self.path = Path(path).expanduser()
        if self.path.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"data.path={path}: a manifest must be {', '.join(TABLE_SUFFIXES)}")
        self.labels = LabelCoder(task, classes, num_classes, label_separator)
        self.task = task
        self.declared = dict(columns or {})
        for column, kind in self.declared.items():
            if kind not in modality_kinds.names():
                raise DataError(
                    f"data.source.columns.{column}={kind!r} is not one of {', '.join(modality_kinds.names())}"
                )
        self.required = list(required or [])
        self.fractions = check_fractions(split_fractions)
        self.split_seed = split_seed
        unknown = sorted(set(kind_settings) - set(modality_kinds.names()))
        if unknown:
            raise DataError(
                f"data.source.{unknown[0]} is neither a manifest setting nor a modality kind "
                f"(kinds: {', '.join(modality_kinds.names())})"
            )
        # n_mels mirrors audio.n_mels at the top level, where audio encoder configs interpolate it
        audio = dict(kind_settings.get("audio") or {})
        if n_mels is not None and audio.setdefault("n_mels", n_mels) != n_mels:
            raise DataError(
                f"data.source.n_mels={n_mels} differs from data.source.audio.n_mels={audio['n_mels']}"
            )
        kind_settings["audio"] = audio
        self.kind_of_name: dict[str, ModalityKind] = {
            name: modality_kinds.get(name).from_settings(kind_settings.get(name))
            for name in modality_kinds.names()
        }
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        # the memory path's per-file cache; the store path's is set when the store is first used
        self.cache: FeatureCache | StoreCache = FeatureCache(self.cache_dir)
        self._store: Store | None = None
        self._table_rows: list[dict[str, Any]] | None = None
        self._table_problems: list[Problem] = []
        self._fingerprint: str | None = None
        self.root = self.path.parent.resolve()
        self._problems: list[Problem] = []
        self.kinds: dict[str, str] = {}  # modality column -> kind name
        self.vocab: dict[str, Vocabulary] = {}
        self._splits: dict[str, list[Sample]] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.stats: dict[
            str, dict[str, np.ndarray]
        ] = {}  # what each column's kind learned from the training split

    # --- what the datamodule asks -------------------------------------------------------------
    @property
    def vocab_sizes(self) -> dict[str, int]:
        self.load()
        return {m: len(v) for m, v in self.vocab.items()}

    # --- reading -------------------------------------------------------------------------------
    def _read_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(where, row) pairs; `where` names the row for problems before its id is known."""
        if not self.path.is_file():
            raise DataError(f"data.path={self.path}: no such manifest file")
        suffix = self.path.suffix.lower()
        try:
            if suffix == ".csv":
                import pandas as pd

                table = pd.read_csv(self.path, dtype=str, keep_default_na=False)
                return [(f"(row {i + 2})", r) for i, r in enumerate(table.to_dict("records"))]
            if suffix == ".parquet":
                import pandas as pd

                table = pd.read_parquet(self.path)
                rows = [{k: _plain(v) for k, v in r.items()} for r in table.to_dict("records")]
                return [(f"(row {i + 1})", r) for i, r in enumerate(rows)]
            rows = []
            # utf-8-sig: Windows editors start a file with a byte-order mark, which json.loads refuses
            for i, line in enumerate(self.path.read_text(encoding="utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    row = SampleError("bad row", f"line {i} is not JSON ({err.msg})")
                if not isinstance(row, dict | SampleError):
                    row = SampleError("bad row", f"line {i} is not a JSON object")
                rows.append((f"(line {i})", row))
            return rows
        except UnicodeDecodeError:  # Excel's plain "CSV" is cp1252 on Windows
            raise DataError(
                f"data.path={self.path} is not UTF-8 text: save it as UTF-8 (Excel: CSV UTF-8)"
            ) from None
        except (OSError, ValueError, ImportError) as err:
            raise DataError(f"data.path={self.path} cannot be read as a {suffix} table: {err}") from None

    def _modality_columns(self, columns: set[str]) -> dict[str, str]:
        missing = [c for c in self.declared if c not in columns]
        if missing:
            raise DataError(f"data.source.columns names {missing}, which {self.path.name} does not have")
        found = {c: c for c in modality_kinds.names() if c in columns} | self.declared
        if not found:
            raise DataError(
                f"{self.path.name} has no modality column: name one "
                f"{', '.join(modality_kinds.names())} or declare yours in data.source.columns"
            )
        return found

    def _kind(self, column: str) -> ModalityKind:
        return self.kind_of_name[self.kinds[column]]

    def _table(self) -> list[dict[str, Any]]:
        """The rows that have an id, a label and a split (the others are problems), once; what the
        training split teaches (classes, vocabularies) is learned here. Nothing is decoded."""
        if self._table_rows is not None:
            return self._table_rows
        rows = self._read_rows()
        problems: list[Problem] = []
        columns = set().union(*(r.keys() for _, r in rows if isinstance(r, dict))) if rows else set()
        for column in ("id", "label"):
            if column not in columns:
                # listing the columns shows a semicolon-separated file (a European Excel's CSV) at once
                found = ", ".join(sorted(map(str, columns))[:10])
                raise DataError(f"{self.path} has no {column!r} column (its columns: {found})")
        self.kinds = self._modality_columns(columns)
        for column in self.required:
            if column not in self.kinds:
                raise DataError(f"data.source.required names {column!r}, which is not a modality column")

        # 1. ids, labels present, splits
        good: list[dict[str, Any]] = []
        for row in _with_unique_ids(rows, problems):
            rid = row["id"]
            split = "" if is_empty(row.get("split")) else str(row["split"]).strip().lower()
            if split and split not in SPLITS:
                problems.append(
                    Problem(rid, "split", "unknown split", f"{row['split']!r} (use train, val or test)")
                )
                continue
            if _lacks_label(row, problems):
                continue
            good.append({**row, "split": split})
        unassigned = [r["id"] for r in good if not r["split"]]
        if unassigned:
            assigned = seeded_split(unassigned, self.fractions, self.split_seed)
            for r in good:
                r["split"] = r["split"] or assigned[r["id"]]

        # 2. what the training split teaches: classes and vocabularies
        train_rows = [r for r in good if r["split"] == "train"]
        self.labels.fit([r["label"] for r in train_rows])
        for column in self.kinds:
            vocab = self._kind(column).vocabulary([r.get(column) for r in train_rows])
            if vocab is not None:
                self.vocab[column] = vocab
        self._table_problems = problems
        self._table_rows = good
        return good

    @property
    def fingerprint(self) -> str:
        """A digest of the data a run trains on: the manifest's rows, each media file's path, size and
        modification time, and every decode setting. Computed from the table and the files' metadata,
        before (and without) decoding; equal digests mean the same decoded data."""
        if self._fingerprint is None:
            rows = self._table()
            self._fingerprint = fingerprint(
                {
                    "source": self.name,
                    "columns": self.kinds,
                    "required": sorted(self.required),
                    "labels": [self.task, self.labels.classes, self.labels.num_outputs],
                    "rows": [[r["id"], r["split"], str(r["label"]), self._row_keys(r)] for r in rows],
                }
            )
        return self._fingerprint

    def load(self) -> dict[str, list[Sample]]:
        if self._splits is not None:
            return self._splits
        good = self._table()
        problems = list(self._table_problems)
        if self.storage == "store":
            samples = self._from_store(good, problems)
        else:
            samples = self._in_memory(good, problems)
        for split in SPLITS:
            if not samples[split]:
                problems.append(
                    Problem("-", "split", "empty split", f"{split} has no usable samples", fatal=True)
                )
        log.info(
            "manifest %s: %d samples, %d decoded, %d from %s, %d problems",
            self.path.name,
            sum(len(v) for v in samples.values()),
            self.cache.misses,
            self.cache.hits,
            "the store" if self.storage == "store" else "cache",
            len(problems),
        )
        self._problems = problems
        self._splits = samples
        return samples

    def _in_memory(self, good: list[dict[str, Any]], problems: list[Problem]) -> dict[str, list[Sample]]:
        """data.storage=memory: every decoded sample in a list (through the per-file .npz cache).

        Ranks started together (SLURM, torchrun) each decode
        their share first, so a first run decodes every file about once, not once per rank; the
        rest of the rows are then mostly cache hits. (No lock: flock can hang on network filesystems,
        and a row decoded twice is only wasted time, as cache writes are atomic.)"""
        rank, world = launch_rank()
        ordered = good[rank::world] + [r for i, r in enumerate(good) if i % world != rank]
        results = dict(zip([r["id"] for r in ordered], self._decode_rows(ordered), strict=True))
        samples: dict[str, list[Sample]] = {s: [] for s in SPLITS}
        decoded: list[tuple[dict[str, Any], Sample]] = []
        for r in good:
            sample, row_problems = results.pop(r["id"])
            problems += row_problems
            if not row_problems:
                decoded.append((r, sample))
        size_problems = self._check_feature_sizes(
            [
                (s.id, {c: None if (a := s.modalities.get(c)) is None else a.shape for c in self.kinds})
                for _, s in decoded
            ]
        )
        problems += size_problems
        bad = {
            p.id for p in size_problems
        }  # ids are unique among decoded rows: duplicates were dropped above
        for r, sample in decoded:
            if sample.id not in bad:
                samples[r["split"]].append(sample)
        for column in self.kinds:  # what each kind learns from the training split (series: mean and std)
            train = [a for s in samples["train"] if (a := s.modalities.get(column)) is not None]
            stats = self._kind(column).fit(train)
            if stats is not None:
                self.stats[column] = stats
        self._prepare([s for split in SPLITS for s in samples[split]], self.stats)
        return samples

    # --- the store (data.storage=store) ----------------------------------------------------------
    @property
    def store(self) -> Store:
        """The shards under `cache_dir`/store (without a cache_dir: a temporary folder of this run)."""
        if self._store is None:
            root = None if self.cache_dir is None else self.cache_dir / "store"
            self._store = Store(root or Path(tempfile.mkdtemp(prefix="gru-mm-store-")))
            if root is None:  # removed with the last split that reads it
                weakref.finalize(self._store, shutil.rmtree, self._store.root, True)
            self.cache = StoreCache(self._store)
        return self._store

    def _row_keys(self, row: dict[str, Any]) -> dict[str, str | None]:
        """Per modality column, a digest of what its decoded value depends on (None: the cell is empty):
        for files their path, size, modification time and the kind's settings; for text the cell and
        the vocabulary."""
        keys: dict[str, str | None] = {}
        for column in self.kinds:
            value, kind = row.get(column), self._kind(column)
            if is_empty(value) or (isinstance(value, list) and not value):
                keys[column] = None
            elif isinstance(kind, FileKind):
                try:
                    keys[column] = self.cache.key(
                        kind.settings(), kind.files(kind.target(value, self._resolve))
                    )
                except (SampleError, OSError) as err:  # decoding reports it; the key changes with the error
                    keys[column] = fingerprint(
                        {"unreadable": str(err), "value": str(value), **kind.settings()}
                    )
            else:
                vocab = self.vocab.get(column)
                keys[column] = fingerprint(
                    {
                        "kind": kind.name,
                        "settings": repr(kind),
                        "value": value,
                        "vocab": vocab and vocab.tokens,
                    }
                )
        return keys

    def _build_store(self, rows: list[dict[str, Any]]) -> list[tuple[ShardReader, int]]:
        """Each row's place (shard, row) in the store, after building the shards that are missing."""
        store = self.store
        keys = [self._row_keys(r) for r in rows]
        plans = []
        for start in range(0, len(rows), self.shard_rows):
            part, part_keys = rows[start : start + self.shard_rows], keys[start : start + self.shard_rows]
            digest = fingerprint(
                {
                    "format": FORMAT,
                    "columns": self.kinds,
                    "required": sorted(self.required),
                    "rows": [[r["id"], k] for r, k in zip(part, part_keys, strict=True)],
                }
            )
            plans.append(ShardPlan(digest, part, part_keys))
        rank, world = launch_rank()
        decoded, _ = store.build(
            plans,
            self._decode_for_store,
            processes=self.decode_processes,
            desc=f"decoding {self.path.name}",
            rank=rank,
            world=world,
        )
        places = []
        for plan in plans:
            shard = store.reader(plan.digest)
            if shard is None:
                raise DataError(f"the store under {store.root} lost shard {plan.digest} while it was read")
            places += [(shard, j) for j in range(shard.rows)]
        # counted as the memory path's cache counts: each media file decoded now, or read decoded
        files = [c for c in self.kinds if isinstance(self._kind(c), FileKind)]
        stored = sum(shard.shape(c, j) is not None for shard, j in places for c in files)
        self.cache.misses += decoded
        self.cache.hits += stored - decoded
        return places

    def _decode_for_store(self, row: dict[str, Any]) -> Decoded:
        """One row decoded for the store (in a decoding process): arrays, times and problems, without
        its label (encoded with the current classes at each load instead)."""
        hits, misses = self.cache.hits, self.cache.misses
        sample, problems = self._sample(row, False)
        counted = (self.cache.hits - hits, self.cache.misses - misses)
        self.cache.hits, self.cache.misses = hits, misses  # the builder adds them up, across processes
        arrays: dict[str, np.ndarray | None] = {c: sample.modalities.get(c) for c in self.kinds}
        arrays |= {f"{c}.times": t for c, t in sample.timestamps.items()}
        return Decoded(
            row["id"],
            arrays,
            [[p.modality, p.kind, p.detail] for p in problems],
            hits=counted[0],
            misses=counted[1],
        )

    def _stored_problems(
        self, row: dict[str, Any], shard: ShardReader, j: int, labeled: bool
    ) -> tuple[Any, list[Problem]]:
        """(target, problems) of a stored row: its label's, then its modalities' as decoding found them."""
        problems, target = [], None
        if labeled:
            try:
                target = self.labels.encode(row["label"])
            except SampleError as err:
                problems.append(Problem(row["id"], "label", err.kind, err.detail))
        problems += [Problem(row["id"], *p) for p in shard.problems(j)]
        return target, problems

    def _from_store(self, good: list[dict[str, Any]], problems: list[Problem]) -> dict[str, StoreSplit]:
        """data.storage=store: the splits as `StoreSplit`s over the shards (decoding what is missing);
        only ids, targets and shapes are held in memory."""
        places = self._build_store(good)
        usable = []
        for r, (shard, j) in zip(good, places, strict=True):
            target, row_problems = self._stored_problems(r, shard, j, labeled=True)
            problems += row_problems
            if not row_problems:
                usable.append((r, target, shard, j))
        size_problems = self._check_feature_sizes(
            [(r["id"], {c: shard.shape(c, j) for c in self.kinds}) for r, _, shard, j in usable]
        )
        problems += size_problems
        bad = {p.id for p in size_problems}
        usable = [u for u in usable if u[0]["id"] not in bad]
        shards = list({id(shard): shard for *_, shard, _ in usable}.values())
        number = {id(shard): i for i, shard in enumerate(shards)}
        for column in self.kinds:  # what each kind learns from the training split (series: mean and std)
            kind = self._kind(column)
            if type(kind).fit is ModalityKind.fit:  # learns nothing: no array is read
                continue
            train = [shard.read(column, j) for r, _, shard, j in usable if r["split"] == "train"]
            stats = kind.fit([a for a in train if a is not None])
            if stats is not None:
                self.stats[column] = stats
        for column in self.kinds:
            if column in self._shapes:
                self._shapes[column] = self._kind(column).prepared_shape(self._shapes[column])
        prepare = {
            c: prepare_with(self._kind(c), self.stats.get(c))
            for c in self.kinds
            if type(self._kind(c)).prepare is not ModalityKind.prepare
        }
        out = {}
        for split in SPLITS:
            part = [u for u in usable if u[0]["split"] == split]
            out[split] = StoreSplit(
                shards,
                [(number[id(shard)], j) for *_, shard, j in part],
                [target for _, target, *_ in part],
                list(self.kinds),
                prepare,
                owner=self.store,
            )
        return out

    def state(self) -> dict[str, Any]:
        """What decoding new rows needs beyond the config (saved in checkpoints): the modality
        columns and their kinds, and what the kinds learned from the training split (series: mean, std)."""
        self.load()
        return {
            "kinds": dict(self.kinds),
            # the key's name predates other kinds learning statistics: kept so older checkpoints read alike
            "series_stats": {
                c: {k: np.asarray(v).tolist() for k, v in stats.items()} for c, stats in self.stats.items()
            },
        }

    def as_trained(
        self, state: Mapping[str, Any], vocab: Mapping[str, list[str]], labels: LabelCoder | None = None
    ) -> tuple[list[Sample], list[Problem]]:
        """Every row of the manifest decoded as a trained model saw its data: the kinds, vocabularies and
        series statistics come from training (`state()`, the checkpoint's vocabularies), not from these
        rows. Without `labels` (prediction) `label` is ignored; with them (the trained model's classes)
        every row needs one. `split` is ignored; rows with problems are left out and listed."""
        rows = self._read_rows()
        unknown = sorted(set(state["kinds"].values()) - set(modality_kinds.names()))
        if unknown:
            raise DataError(
                f"the model was trained on data of kind {unknown[0]!r}, which is not a "
                f"registered modality kind here (kinds: {', '.join(modality_kinds.names())})"
            )
        self.kinds = dict(state["kinds"])
        self.vocab = {c: Vocabulary(tokens) for c, tokens in vocab.items()}
        if labels is not None:
            self.labels = labels
        columns = set().union(*(r.keys() for _, r in rows if isinstance(r, dict))) if rows else set()
        if "id" not in columns:
            raise DataError(f"{self.path} has no 'id' column")
        if not set(self.kinds) & columns:
            raise DataError(f"{self.path.name} has none of the model's modality columns {sorted(self.kinds)}")
        problems: list[Problem] = []
        good = [
            row
            for row in _with_unique_ids(rows, problems)
            if labels is None or not _lacks_label(row, problems)
        ]
        samples = []
        decode = self._via_store if self.storage == "store" else self._decode_rows
        for sample, row_problems in decode(good, labeled=labels is not None):
            problems += row_problems
            if not row_problems:
                samples.append(sample)
        self._prepare(samples, state.get("series_stats") or {})
        return samples, problems

    def _prepare(self, samples: list[Sample], stats: Mapping[str, Mapping[str, Any]]) -> None:
        """Each decoded array -> what the model sees, with the training split's statistics (series:
        standardised, then with series.missing=mask its missingness inputs), in training and prediction."""
        for column in self.kinds:
            kind = self._kind(column)
            for s in samples:
                if s.modalities.get(column) is not None:
                    s.modalities[column] = kind.prepare(
                        s.modalities[column], s.timestamps.get(column), stats.get(column)
                    )
            if column in self._shapes:
                self._shapes[column] = kind.prepared_shape(self._shapes[column])

    def _resolve(self, value: str) -> Path:
        path = self._inside(value, value)
        if not path.exists() and "\\" in value:  # a manifest written on Windows: audio\clip1.wav
            path = self._inside(value.replace("\\", "/"), value)
        if not path.exists():
            raise SampleError("missing file", str(value).strip())
        return path

    def _inside(self, value: str, written: str) -> Path:
        path = (self.root / value.strip()).resolve()
        if not path.is_relative_to(self.root):
            raise SampleError("path leaves the manifest folder", f"{written} is outside {self.root}")
        return path

    def _via_store(
        self, rows: list[dict[str, Any]], labeled: bool = True
    ) -> list[tuple[Sample, list[Problem]]]:
        """What `_decode_rows` returns, decoded through the store (new data for a trained model: its
        decoded rows stay on disk for the next evaluation or prediction on the same files)."""
        out = []
        for r, (shard, j) in zip(rows, self._build_store(rows), strict=True):
            target, problems = self._stored_problems(r, shard, j, labeled)
            split = StoreSplit([shard], [(0, j)], [target], list(self.kinds), owner=self.store)
            out.append((split[0], problems))
        return out

    def _decode_rows(
        self, rows: list[dict[str, Any]], labeled: bool = True
    ) -> list[tuple[Sample, list[Problem]]]:
        """`_sample` of every row, in order, `decode_threads` rows at a time (reading files, resampling
        and decoding images release the GIL, so threads overlap them without the start-up and pickling
        of processes). A progress bar shows on a terminal when decoding takes more than a second."""
        with (
            ThreadPoolExecutor(self.decode_threads) as pool,
            tqdm(
                total=len(rows),
                desc=f"decoding {self.path.name}",
                unit="row",
                delay=1.0,
                disable=None,
                leave=False,
            ) as bar,
        ):
            results = []
            for result in pool.map(lambda row: self._sample(row, labeled), rows):
                results.append(result)
                bar.update()
        return results

    def _sample(self, row: dict[str, Any], labeled: bool = True) -> tuple[Sample, list[Problem]]:
        rid, problems = row["id"], []
        modalities: dict[str, np.ndarray | None] = {}
        times: dict[str, np.ndarray] = {}
        target = None
        try:
            if labeled:
                target = self.labels.encode(row["label"])
        except SampleError as err:
            problems.append(Problem(rid, "label", err.kind, err.detail))
        for column in self.kinds:
            value = row.get(column)
            if is_empty(value) or (isinstance(value, list) and not value):
                if column in self.required:
                    problems.append(
                        Problem(
                            rid,
                            column,
                            "empty required column",
                            f"{column} is listed in data.source.required",
                        )
                    )
                modalities[column] = None  # absent: a length-0 sequence
                continue
            try:
                out = self._kind(column).read(value, Cell(self._resolve, self.cache, self.vocab.get(column)))
            except SampleError as err:
                problems.append(Problem(rid, column, err.kind, err.detail))
                continue
            except OSError as err:  # permissions, a file vanishing mid-run
                problems.append(Problem(rid, column, "unreadable file", str(err)))
                continue
            modalities[column] = out["data"]
            if "times" in out:
                times[column] = out["times"]
        return Sample(rid, target, modalities, times), problems

    def _check_feature_sizes(
        self, decoded: list[tuple[str, dict[str, tuple[int, ...] | None]]]
    ) -> list[Problem]:
        """Every sample's per-step shape must match the most common one (a series with 3 columns among 4s).
        `decoded`: (id, {column: the decoded array's shape, None where absent}) per usable row."""
        problems = []
        for column in self.kinds:
            shapes = Counter(tuple(s[column][1:]) for _, s in decoded if s.get(column) is not None)
            if not shapes:
                self._shapes[column] = self._kind(column).step_shape()
                continue
            common = shapes.most_common(1)[0][0]
            self._shapes[column] = tuple(common)
            for rid, s in decoded:
                shape = s.get(column)
                if shape is not None and tuple(shape[1:]) != common:
                    problems.append(
                        Problem(
                            rid,
                            column,
                            "wrong feature size",
                            f"steps of shape {list(shape[1:])}, the others have {list(common)}",
                        )
                    )
        return problems


def _with_unique_ids(rows: list[tuple[str, Any]], problems: list[Problem]) -> list[dict[str, Any]]:
    """The readable rows with an id not seen before (stripped); the others become problems."""
    out, seen = [], {}
    for where, row in rows:
        if isinstance(row, SampleError):
            problems.append(Problem(where, "-", row.kind, row.detail))
            continue
        rid = "" if is_empty(row.get("id")) else str(row["id"]).strip()
        if not rid:
            problems.append(Problem(where, "id", "empty required column", "the row has no id"))
            continue
        if rid in seen:
            problems.append(Problem(rid, "id", "duplicate id", f"{where} repeats the id of {seen[rid]}"))
            continue
        seen[rid] = where
        out.append({**row, "id": rid})
    return out


def _lacks_label(row: dict[str, Any], problems: list[Problem]) -> bool:
    """True (and a problem) for a row whose label is empty; a list (a JSONL multilabel row) always counts."""
    if is_empty(row.get("label")) and not isinstance(row.get("label"), list):
        problems.append(Problem(row["id"], "label", "empty required column", "the row has no label"))
        return True
    return False


def _plain(value: Any) -> Any:
    """Parquet cells -> plain Python: arrays to lists, NaN/None to None."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
