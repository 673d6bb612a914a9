"""The vocabulary of a text column: words -> ids with <pad> = 0 and <unk> = 1. Its own module because
every modality's `Cell` may carry one (`kinds.base`), while only the text kind builds it."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

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
