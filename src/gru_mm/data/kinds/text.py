"""`text`: a cell of text -> token ids [T] of a vocabulary learned from the training split (or read
from a file)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gru_mm.data.kinds.base import Cell, ModalityKind
from gru_mm.data.sources.base import DataError, SampleError
from gru_mm.data.targets import is_empty

_WORD = re.compile(r"\w+(?:'\w+)*")
PAD, UNK = "<pad>", "<unk>"


def tokenize(text: str) -> list[str]:
    """Lowercase words (letters, digits, inner apostrophes); punctuation is dropped."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Token -> id with <pad> = 0 and <unk> = 1; built from training texts or read from a file."""

    def __init__(self, tokens: list[str]):
        specials = [PAD, UNK]
        self.tokens = specials + [t for t in dict.fromkeys(tokens) if t not in specials]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: list[str], min_freq: int = 1, max_size: int | None = None) -> Vocabulary:
        counts = Counter(tok for text in texts for tok in tokenize(text))
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size] if max_size else ranked)

    @classmethod
    def read(cls, path: Path) -> Vocabulary:
        """One token per line (blank lines skipped)."""
        return cls([line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> np.ndarray:
        unk = self.index[UNK]
        return np.array([self.index.get(t, unk) for t in tokenize(text)], dtype=np.int64)


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
