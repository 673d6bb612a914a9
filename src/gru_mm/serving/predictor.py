"""`Predictor`: a trained model rebuilt from its checkpoint alone, predicting on decoded samples.

The checkpoint holds everything needed: the resolved config, the weights, and what the data meant
(task, class names, vocabularies, per-step feature shapes), so no training data is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gru_mm import checkpoints
from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.data.kinds import Vocabulary
from gru_mm.models.build import build_module

TIMES = "timestamps"  # optional sample key: {modality: step times in seconds} for event fusion


class SavedData:
    """What build_module needs from a datamodule, read back from a checkpoint's data meta."""

    def __init__(self, meta: dict[str, Any]):
        self._meta = meta
        self.task = meta["task"]
        self.num_classes = meta["num_classes"]
        self.feature_shapes = {m: tuple(s) for m, s in meta["feature_shapes"].items()}
        self.vocab_sizes = {m: len(Vocabulary(tokens)) for m, tokens in (meta.get("vocab") or {}).items()}

    def meta(self) -> dict[str, Any]:
        return self._meta


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A gru-mm checkpoint that a Predictor can be rebuilt from; else a CheckpointError naming it.

    Read with weights_only (no pickled code runs), and its config checked against the allow-list of
    what a checkpoint may build before anything is built from it."""
    ckpt = checkpoints.load(path)
    meta, config = ckpt.get("gru_mm_data"), (ckpt.get("gru_mm") or {}).get("config")
    if not config or not meta:
        raise checkpoints.CheckpointError(
            f"{path}: not a gru-mm checkpoint (it holds no config or data meta)"
        )
    checkpoints.check_config(config, path)
    if "feature_shapes" not in meta:
        raise checkpoints.CheckpointError(
            f"{path}: written before checkpoints recorded the data's feature shapes; "
            "use gru-mm-eval with its training data, or train again"
        )
    return ckpt


class Predictor:
    """predict(samples) -> a DataFrame with one row per sample (see `predict`)."""

    def __init__(
        self,
        module: torch.nn.Module,
        meta: dict[str, Any],
        batch_size: int = 64,
        config: dict[str, Any] | None = None,
    ):
        self.module = module.eval()
        self.meta = meta
        self.config = config  # the resolved training config, when built from a checkpoint
        self.task: str = meta["task"]
        self.classes: list[str] = list(meta.get("classes") or range(meta["num_classes"] or 1))
        self.classes = [str(c) for c in self.classes]
        self.shapes = {m: tuple(s) for m, s in meta["feature_shapes"].items()}
        self.vocabs = {m: Vocabulary(tokens) for m, tokens in (meta.get("vocab") or {}).items()}
        self.batch_size = batch_size
        self._collate = Collate(self.shapes)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> Predictor:
        return cls.from_dict(read_checkpoint(path), device, batch_size)

    @classmethod
    def from_dict(
        cls, ckpt: dict[str, Any], device: str | torch.device = "cpu", batch_size: int = 64
    ) -> Predictor:
        """From a checkpoint already read with `read_checkpoint` (its config is checked again: a dict may
        come from elsewhere)."""
        meta, config = ckpt["gru_mm_data"], ckpt["gru_mm"]["config"]
        trusted = checkpoints.trusted_config(config, "the checkpoint")
        module = build_module(trusted, datamodule=SavedData(meta), pretrained=False)
        module.load_state_dict(ckpt["state_dict"])
        return cls(module.to(device), meta, batch_size, config)

    def _sample(self, i: int, raw: Mapping[str, Any]) -> Sample:
        if not isinstance(raw, Mapping):
            raise ValueError(f"sample {i}: expected a dict of modality -> array, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(self.shapes) - {TIMES})
        if unknown:
            raise ValueError(
                f"sample {i}: unknown modalities {unknown}; the model takes {sorted(self.shapes)}"
            )
        arrays: dict[str, np.ndarray | None] = {}
        for m, shape in self.shapes.items():
            value = raw.get(m)
            if isinstance(value, float) and np.isnan(value):  # an empty DataFrame cell
                value = None
            if isinstance(value, str) and m in self.vocabs:  # raw text: the training tokenizer and vocabulary
                value = self.vocabs[m].encode(value)
            if value is not None:
                value = np.asarray(value)
                if value.ndim != 1 + len(shape) or tuple(value.shape[1:]) != shape:
                    raise ValueError(
                        f"sample {i}, modality {m!r}: expected shape [T, {', '.join(map(str, shape))}]"
                        f" (T steps), got {list(value.shape)}".replace("[T, ]", "[T]")
                    )
                if m not in self.vocabs and not np.isfinite(value).all():
                    raise ValueError(f"sample {i}, modality {m!r}: holds NaN or infinite values")
                value = value.astype(np.int64 if m in self.vocabs else np.float32, copy=False)
            arrays[m] = value
        times = {m: np.asarray(t, dtype=np.float32) for m, t in (raw.get(TIMES) or {}).items()}
        return Sample(str(i), 0, arrays, times)

    def _regression_columns(self) -> list[str]:
        return ["predicted"] if len(self.classes) == 1 else [f"predicted_{c}" for c in self.classes]

    @torch.no_grad()
    def predict(self, samples: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
        """samples: one dict per sample, modality -> array [T, *feature shape] as the data source decodes
        it (text may also be a string), or a DataFrame with a column per modality (what `mlflow models
        serve` passes on); a missing, None or empty modality is absent. Returns, per sample:
        multiclass / binary / multilabel: a probability column per class and `predicted` (the class
        name; multilabel: the `;`-joined names over 0.5); regression: `predicted`, or with several
        targets `predicted_<name>` per target (names from data.source.classes, else 0, 1, ...)."""
        if isinstance(samples, pd.DataFrame):
            samples = samples.to_dict("records")
        rows = [self._sample(i, s) for i, s in enumerate(samples)]
        if not rows:
            columns = (
                self._regression_columns() if self.task == "regression" else [*self.classes, "predicted"]
            )
            return pd.DataFrame(columns=["probability", "predicted"] if self.task == "binary" else columns)
        device = next(self.module.parameters()).device
        outs = []
        for start in range(0, len(rows), self.batch_size):
            batch = self._collate(rows[start : start + self.batch_size]).to(device)
            outs.append(self.module.outputs(batch).float().cpu())
        out = torch.cat(outs) if outs else torch.zeros(0, len(self.classes))
        if self.task == "regression":
            return pd.DataFrame(out.reshape(len(rows), -1).numpy(), columns=self._regression_columns())
        probs = out.softmax(-1) if self.task == "multiclass" else out.sigmoid()
        if self.task == "binary":
            probs = probs.reshape(len(rows), 1)
            frame = pd.DataFrame({"probability": probs[:, 0].numpy()})
            positive = (probs[:, 0] > 0.5).tolist()
            names = self.classes if len(self.classes) == 2 else [0, 1]  # the label's names, when it had them
            frame["predicted"] = [names[int(p)] for p in positive]
            return frame
        frame = pd.DataFrame(probs.numpy(), columns=self.classes)
        if self.task == "multiclass":
            frame["predicted"] = [self.classes[k] for k in probs.argmax(-1).tolist()]
        else:
            frame["predicted"] = [
                ";".join(c for c, p in zip(self.classes, row, strict=True) if p > 0.5)
                for row in probs.tolist()
            ]
        return frame
