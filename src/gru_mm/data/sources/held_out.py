"""`HeldOut`: another labeled file, decoded as a trained model's data was, as a test split.

`gru-mm-eval data.path=...` tests a checkpoint on it: the vocabularies, series statistics, classes
and per-step shapes come from the checkpoint's data meta, never from the new file, so a sample
means to the model what it meant in training. Every sample of the file is in the test split.
"""

from __future__ import annotations

from typing import Any

from gru_mm.data.batch import Sample
from gru_mm.data.kinds import Vocabulary
from gru_mm.data.sources.base import SPLITS, Problem
from gru_mm.data.targets import LabelCoder


class HeldOut:
    def __init__(self, source: Any, data_meta: dict[str, Any]):
        if not hasattr(source, "as_trained"):
            raise TypeError(f"{type(source).__name__} cannot decode a file as a trained model's data")
        self.source = source
        self.data_meta = data_meta
        self.task = data_meta["task"]
        self.labels = LabelCoder.from_meta(
            data_meta, getattr(getattr(source, "labels", None), "separator", ";")
        )
        self.vocab = {m: Vocabulary(tokens) for m, tokens in (data_meta.get("vocab") or {}).items()}
        self._samples: list[Sample] | None = None
        self._problems: list[Problem] = []

    def load(self) -> dict[str, list[Sample]]:
        if self._samples is None:
            meta = self.data_meta
            state = {"modalities": sorted(meta["feature_shapes"]), **(meta.get("source_state") or {})}
            samples, problems = self.source.as_trained(state, meta.get("vocab") or {}, self.labels)
            self._samples, wrong = with_model_shapes(samples, self.feature_shapes)
            self._problems = problems + wrong
            if not self._samples:
                self._problems.append(
                    Problem("-", "split", "empty split", "no usable samples to test", fatal=True)
                )
        return {s: self._samples if s == "test" else [] for s in SPLITS}

    def split(self, name: str) -> list[Sample]:
        return self.load()[name]

    @property
    def problems(self) -> list[Problem]:
        self.load()
        return list(self._problems)

    @property
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(s) for m, s in self.data_meta["feature_shapes"].items()}

    @property
    def kinds(self) -> dict[str, str]:
        """The training data's modality kinds (checkpoints from before they were recorded: the manifest's)."""
        return dict(
            self.data_meta.get("kinds") or (self.data_meta.get("source_state") or {}).get("kinds") or {}
        )

    @property
    def num_classes(self) -> int:
        return self.data_meta["num_classes"]

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return {m: len(v) for m, v in self.vocab.items()}

    def state(self) -> dict[str, Any] | None:
        return self.data_meta.get("source_state")


def with_model_shapes(
    samples: list[Sample], shapes: dict[str, tuple[int, ...]]
) -> tuple[list[Sample], list[Problem]]:
    """The samples whose per-step shapes are the model's, and a problem for each modality that is not
    (a series with other columns than in training, say)."""
    good, problems = [], []
    for s in samples:
        wrong = [
            m for m, a in s.modalities.items() if a is not None and tuple(a.shape[1:]) != tuple(shapes[m])
        ]
        problems += [
            Problem(
                s.id,
                m,
                "wrong feature size",
                f"steps of shape {list(s.modalities[m].shape[1:])}, the model takes {list(shapes[m])}",
            )
            for m in wrong
        ]
        if not wrong:
            good.append(s)
    return good, problems
