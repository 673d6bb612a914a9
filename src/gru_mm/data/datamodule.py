"""The LightningDataModule: a source's splits -> length-bucketed DataLoaders of `Batch`es."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gru_mm.data.batch import Batch
from gru_mm.data.collate import Collate, Cropped
from gru_mm.data.sampler import LengthBucketBatchSampler, ResumableDataLoader
from gru_mm.data.sources.base import DataError, DataProblems, Problem, check_storage

log = logging.getLogger("gru_mm.data")
ON_ERROR = ("fail", "skip")


@dataclass
class DataReport:
    """What validation found: the problems and the ids of samples left out because of them."""

    problems: list[Problem] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)

    def tsv(self) -> str:
        return "".join(p.line() + "\n" for p in self.problems)


def sample_lengths(sample, modalities) -> list[int]:
    """Bucketing key: each modality's length (0 where absent)."""
    return [0 if (a := sample.modalities.get(m)) is None else len(a) for m in modalities]


def split_lengths(samples, modalities) -> Any:
    """[N, M] bucketing keys of a split: from a store's index (no array read) or from the samples."""
    if hasattr(samples, "lengths"):
        return samples.lengths(list(modalities))
    return [sample_lengths(s, modalities) for s in samples]


class SequenceDataModule(pl.LightningDataModule):
    def __init__(
        self,
        source,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        bucket: bool = True,
        pool_batches: int = 50,
        seed: int = 0,
        on_error: str = "fail",
        path: str | None = None,
        trust_pickle: bool = False,
        train_crop_steps: int | None = None,
        augment: Any = None,
        storage: str = "store",
    ):
        # `path` and `trust_pickle` are read by the sources (their configs interpolate ${..path}); they
        # live at this level so that `data.path=FILE` is the one key a user sets.
        super().__init__()
        if on_error not in ON_ERROR:
            raise DataError(f"data.on_error={on_error!r} must be one of {', '.join(ON_ERROR)}")
        self.on_error = on_error
        # read by the sources (their configs interpolate ${..storage}); checked here to fail first
        self.storage = check_storage(storage)
        self.path = path
        self.trust_pickle = trust_pickle
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers  # None: `loader_workers` picks
        self.pin_memory = pin_memory  # None: pinned when training on a GPU
        self.persistent_workers = persistent_workers
        self.bucket = bucket
        self.pool_batches = pool_batches
        self.seed = seed
        self.train_crop_steps = train_crop_steps
        # training batches' augmentation settings (conf/data/augment/), built once the data's kinds are known
        self.augment = augment
        self._augmentation: Any = None  # gru_mm.data.augment.BatchAugment, or False: nothing to augment
        self._augmentation_state: dict | None = None  # a resumed run's generator state, until it is built
        self.report: DataReport | None = None
        self._collate: Collate | None = None

    @property
    def task(self) -> str:
        return getattr(self.source, "task", "multiclass")

    @property
    def num_classes(self) -> int:
        """Outputs the model needs: classes (multiclass, multilabel) or 1 (binary, regression)."""
        return self.source.num_classes

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """{modality: vocabulary size} for token modalities (text), which their embeddings need."""
        return dict(getattr(self.source, "vocab_sizes", {}))

    def train_targets(self) -> torch.Tensor | None:
        """The training split's targets, stacked (what `loss.class_weights=balanced` counts); None when
        there is no training split (a held-out file under test)."""
        samples = self.source.split("train")
        targets = getattr(samples, "targets", None) or [s.target for s in samples]  # a store: no array read
        return torch.as_tensor(np.stack([np.asarray(t) for t in targets])) if targets else None

    @property
    def fingerprint(self) -> str:
        """The source's digest of its data (manifest or file, the files' sizes and modification times,
        the decode settings), computed before any decoding: equal digests, the same data."""
        return self.source.fingerprint

    def meta(self) -> dict:
        """What a trained model's inputs and outputs mean: task, classes, vocabularies, shapes."""
        labels = getattr(self.source, "labels", None)
        vocab = getattr(self.source, "vocab", {})
        return {
            "task": self.task,
            "num_classes": self.num_classes,
            "classes": list(labels.classes) if labels is not None and labels.classes else None,
            "vocab": {m: list(v.tokens) for m, v in vocab.items()},
            # per-step input shapes: enough, with the config, to rebuild the model without the data
            "feature_shapes": {m: list(s) for m, s in self.source.feature_shapes.items()},
            # each modality's kind (gru_mm.data.kinds): what sizes its encoder takes from the data
            "kinds": dict(getattr(self.source, "kinds", None) or {}),
            # what decoding new recordings needs (manifest: modality kinds, series statistics)
            "source_state": self.source.state() if hasattr(self.source, "state") else None,
        }

    @property
    def collate(self) -> Collate:
        # Built on first use: the shapes of a user's data are known only once its source has read it.
        if self._collate is None:
            dtype = torch.int64 if self.task == "multiclass" else torch.float32
            self._collate = Collate(self.source.feature_shapes, target_dtype=dtype)
        return self._collate

    def validate(self) -> DataReport:
        """Read every sample (through the decode cache) and collect the problems.

        With on_error=fail any problem raises `DataProblems` listing them; with skip the bad samples
        are already out of the splits and only problems that no skipping fixes (an empty split) raise.
        """
        if self.report is None:
            self.source.load()
            problems = list(getattr(self.source, "problems", []))
            fatal = [p for p in problems if p.fatal]
            where = f"data.path={self.path}" if self.path else "the data"
            if fatal or (problems and self.on_error == "fail"):
                raise DataProblems(fatal if self.on_error == "skip" else problems, where)
            skipped = sorted({p.id for p in problems})
            if skipped:
                log.warning(
                    "data.on_error=skip: %d sample(s) left out for %d problem(s): %s%s",
                    len(skipped),
                    len(problems),
                    ", ".join(skipped[:10]),
                    " ..." if len(skipped) > 10 else "",
                )
            self.report = DataReport(problems, skipped)
        return self.report

    @property
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.source.feature_shapes

    def prepare_data(self) -> None:
        # Runs on one process per node: generate or decode into the cache once.
        self.validate()

    def _replicas(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(
        self, split: str, shuffle: bool, batch_size: int, crop_steps: int | None = None
    ) -> DataLoader:
        samples = self.source.split(split)
        replicas, rank = self._replicas()
        sampler = LengthBucketBatchSampler(
            split_lengths(samples, self.source.feature_shapes),
            batch_size,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            pool_batches=self.pool_batches,
            bucket=self.bucket,
            draws=crop_steps is not None,
        )
        collate = self.collate
        on_gpu = self._device_type() == "cuda"
        if on_gpu:  # one pinned buffer per batch, moved in one non-blocking copy (Batch.packed)
            collate = collate.packing()
        workers = self.loader_workers()
        # resumable: Lightning saves the training loader's place in the epoch with each checkpoint
        return ResumableDataLoader(
            samples if crop_steps is None else Cropped(samples, crop_steps),
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=on_gpu if self.pin_memory is None else self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
        )

    def _device_type(self) -> str | None:
        trainer = self.trainer
        return None if trainer is None else trainer.strategy.root_device.type

    def loader_workers(self) -> int:
        """data.num_workers, or with null: none on the CPU (where the training step itself wants every
        core and loading is a few per cent of it), and on a GPU up to 4 per process, leaving a core each."""
        if self.num_workers is not None:
            return self.num_workers
        if self._device_type() != "cuda":
            return 0
        processes = self.trainer.num_devices if self.trainer is not None else 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, min(4, cores // max(1, processes) - 1))

    def train_dataloader(self) -> DataLoader:
        # trainer.overfit_batches (debug=overfit): the same batches every epoch. Lightning turns shuffling
        # off only for samplers it knows, and a batch sampler of our own is not one of them.
        overfit = bool(self.trainer and self.trainer.overfit_batches)
        # random crops of long sequences in training only (validation and test read whole sequences)
        return self._loader("train", not overfit, self.batch_size, crop_steps=self.train_crop_steps)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    # --- training-time augmentation (gru_mm.data.augment): after the decode cache, on the batch's device ----
    def augmentation(self) -> Any:
        """The training batches' `BatchAugment` (None: `data.augment` changes nothing for this data)."""
        if self._augmentation is None:
            from gru_mm.data import kinds as modality_kinds
            from gru_mm.data.augment import build_augment

            shapes, known = self.source.feature_shapes, dict(getattr(self.source, "kinds", None) or {})
            kinds = {
                m: known.get(m) or modality_kinds.guess(tuple(shape), m in self.vocab_sizes).name
                for m, shape in shapes.items()
            }
            self._augmentation = build_augment(self.augment, kinds, shapes, self.seed) or False
            if self._augmentation and self._augmentation_state is not None:
                self._augmentation.load_state_dict(self._augmentation_state)
            if self._augmentation:
                log.info("data.augment: %s", self._augmentation)
        return self._augmentation or None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # training batches only (never validation, test or prediction), once they are on their device
        trainer = self.trainer
        if trainer is None or not trainer.training or not isinstance(batch, Batch) or self.augment is None:
            return batch
        augmentation = self.augmentation()
        return batch if augmentation is None else augmentation(batch, salt=trainer.global_rank)

    def state_dict(self) -> dict[str, Any]:
        # saved by Lightning with every checkpoint: a resumed run continues the same augmentation draws
        augmentation = self._augmentation or None
        return {"augment": augmentation.state_dict()} if augmentation is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "augment" in state_dict:
            self._augmentation_state = state_dict["augment"]
            if self._augmentation:
                self._augmentation.load_state_dict(self._augmentation_state)
