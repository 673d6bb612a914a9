"""`text`: a cell of text -> token ids [T] of a vocabulary learned from the training split (or read
from a file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gru_mm.data.kinds.base import Cell, ModalityKind
from gru_mm.data.kinds.vocabulary import Vocabulary
from gru_mm.data.sources.base import DataError, SampleError
from gru_mm.data.targets import is_empty


@dataclass(frozen=True)
class Text(ModalityKind):
    """Lowercase words -> ids; words the vocabulary lacks are <unk>. Not cached: tokenising is cheaper."""

    name = "text"
    default_encoder = "text_embedding"

    vocab_file: str | None = None
    min_freq: int = 1
    max_size: int | None = None

    def vocabulary(self, train_values: list[Any]) -> Vocabulary:
        if self.vocab_file:
            path = Path(self.vocab_file).expanduser()
            if not path.is_file():
                raise DataError(f"data.source.text.vocab_file={self.vocab_file}: no such file")
            return Vocabulary.read(path)
        texts = [str(v) for v in train_values if not is_empty(v)]
        return Vocabulary.build(texts, int(self.min_freq), self.max_size)

    def read(self, value: Any, cell: Cell) -> dict[str, np.ndarray]:
        ids = cell.vocabulary.encode(str(value))
        if len(ids) == 0:
            raise SampleError("no words", f"{str(value)[:40]!r} has no words to tokenise")
        return {"data": ids}

    def step_shape(self) -> tuple[int, ...]:
        return ()  # one token id per step

    @classmethod
    def encoder_sizes(cls, shape: tuple[int, ...], vocab_size: int | None) -> dict[str, int]:
        return {"vocab_size": int(vocab_size)} if vocab_size is not None else {}
