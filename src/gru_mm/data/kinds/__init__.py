"""Modality kinds, one module each: how a manifest column of that kind is decoded and what its encoder needs.

To add a kind, write a module here with a `ModalityKind` subclass and register it below.
"""

from gru_mm.data.kinds.audio import Audio
from gru_mm.data.kinds.base import Cell, FileKind, ModalityKind, check_finite
from gru_mm.data.kinds.frames import Frames
from gru_mm.data.kinds.registry import get, guess, names, register, unregister
from gru_mm.data.kinds.series import Series
from gru_mm.data.kinds.text import Text
from gru_mm.data.kinds.vocabulary import Vocabulary

for _kind in (Audio, Frames, Text, Series):  # this order is the order error messages list them in
    register(_kind)

__all__ = [
    "Cell",
    "FileKind",
    "ModalityKind",
    "Vocabulary",
    "check_finite",
    "get",
    "guess",
    "names",
    "register",
    "unregister",
]
