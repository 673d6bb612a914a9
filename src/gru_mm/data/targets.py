"""Raw labels (class names, numbers, lists) -> targets for each task; bad labels raise `SampleError`."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from gru_mm.data.sources.base import TASKS, DataError, SampleError

_INT = re.compile(r"[+-]?\d+")


def _as_int(raw: Any) -> int | None:
    """An integer label (5, 5.0, "5"), else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | np.integer):
        return int(raw)
    if isinstance(raw, float | np.floating) and float(raw).is_integer():
        return int(raw)
    if isinstance(raw, str) and _INT.fullmatch(raw.strip()):
        return int(raw.strip())
    return None


def is_empty(raw: Any) -> bool:
    return (
        raw is None
        or (isinstance(raw, str) and not raw.strip())
        or (isinstance(raw, float) and math.isnan(raw))
    )


class LabelCoder:
    """Fits the class list on the training labels (unless configured), then encodes every label.

    multiclass: a class name or an index -> int64 index.   binary: two classes -> 0.0 / 1.0.
    multilabel: a list (or `separator`-joined names) -> multi-hot float32 vector.
    regression: a number -> float; K numbers (a list, or `separator`-joined) -> float32 vector [K].
    For regression `classes` optionally names the K targets, and `num_classes` is K (from the
    training labels: the most common count; a label with another count is a problem).
    """

    def __init__(
        self,
        task: str,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
        separator: str = ";",
    ):
        if task not in TASKS:
            raise DataError(f"data.source.task={task!r} is not one of {', '.join(TASKS)}")
        self.task = task
        self.classes = [str(c) for c in classes] if classes else None
        self.num_classes = len(self.classes) if self.classes else num_classes
        if task == "binary" and self.num_classes not in (None, 2):
            raise DataError(
                f"a binary task has 2 classes, but data.source.classes/num_classes gives {self.num_classes}"
            )
        self.separator = separator
        self.numeric = False  # labels are indices rather than names

    @classmethod
    def from_meta(cls, meta: dict[str, Any], separator: str = ";") -> LabelCoder:
        """The coder a trained model's data meta describes (its classes fixed, nothing to fit)."""
        task, classes = meta["task"], meta.get("classes")
        coder = cls(task, classes, 2 if task == "binary" else meta["num_classes"], separator)
        coder.numeric = not classes and task != "regression"  # classes were label indices
        return coder

    def _items(self, raw: Any) -> list[Any]:
        if self.task not in ("multilabel", "regression"):
            return [raw]
        if isinstance(raw, list | tuple | np.ndarray):
            return list(raw)
        if isinstance(raw, str):
            return [s.strip() for s in raw.split(self.separator) if s.strip()]
        return [raw]

    def fit(self, train_labels: list[Any]) -> None:
        """Infer the classes from the training split when the config gives none."""
        if self.task == "regression":
            counts = Counter(len(self._items(raw)) for raw in train_labels if not is_empty(raw))
            found = counts.most_common(1)[0][0] if counts else 1
            if self.num_classes is not None and self.num_classes != found:
                raise DataError(
                    f"data.source.classes/num_classes give {self.num_classes} regression targets, "
                    f"but the training labels have {found} value(s) each"
                )
            self.num_classes = found
            return
        if self.task == "binary" and self.classes is None:
            self.num_classes = 2
        items = [x for raw in train_labels for x in self._items(raw)]
        ints = [_as_int(x) for x in items]
        if self.classes is None and items and all(i is not None for i in ints):
            self.numeric = True
            if self.num_classes is None:
                self.num_classes = max(ints) + 1
        elif self.classes is None and self.num_classes is None:
            self.classes = sorted({str(x).strip() for x in items})
            self.num_classes = len(self.classes)
        elif self.classes is None and self.num_classes is not None:
            names = sorted({str(x).strip() for x in items})
            if self.task == "binary" and set(names) <= {"true", "false", "True", "False"}:
                self.classes = ["false", "true"]
            else:
                self.classes = names
        if self.task == "binary" and self.classes and len(self.classes) != 2:
            raise DataError(
                f"a binary task needs exactly 2 classes, but the training labels are {self.classes}"
            )
        if not self.num_classes:
            raise DataError("the training split has no labels to learn classes from")

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "binary" else int(self.num_classes)

    def _index(self, item: Any) -> int:
        i = _as_int(item)
        if self.classes is not None and not self.numeric:
            name = str(item).strip()
            if self.task == "binary" and name in ("True", "False"):
                name = name.lower()
            if name in self.classes:
                return self.classes.index(name)
            if i is None:
                raise SampleError("unknown label", f"{name!r} is not one of the classes {self.classes[:10]}")
        if i is None:
            raise SampleError("unknown label", f"{item!r} is not a class index")
        if not 0 <= i < self.num_classes:
            raise SampleError("label out of range", f"{i} is outside 0..{self.num_classes - 1}")
        return i

    def encode(self, raw: Any) -> Any:
        if self.task == "regression":
            try:
                values = [float(v) for v in self._items(raw)]
            except (TypeError, ValueError):
                raise SampleError("label not a number", f"{raw!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise SampleError("NaN or infinite values", f"label {raw!r}")
            if len(values) != self.num_classes:
                raise SampleError(
                    "wrong number of targets",
                    f"label {raw!r} has {len(values)} value(s), the training labels {self.num_classes}",
                )
            return values[0] if len(values) == 1 else np.asarray(values, dtype=np.float32)
        if self.task == "multilabel":
            target = np.zeros(self.num_classes, dtype=np.float32)
            for item in self._items(raw):
                target[self._index(item)] = 1.0
            return target
        index = self._index(raw)
        return float(index) if self.task == "binary" else index
