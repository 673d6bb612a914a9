"""What every modality kind offers: decoding a manifest cell, what training teaches, what its encoder needs.

A kind is a frozen dataclass whose fields are its settings (`data.source.<name>` of a manifest). The
manifest calls only the methods below, so a kind brings no branch anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gru_mm.data.cache import FeatureCache
from gru_mm.data.sources.base import DataError, SampleError

if TYPE_CHECKING:
    from gru_mm.data.kinds.vocabulary import Vocabulary


def check_finite(array: np.ndarray, allow_nan: bool = False, where: str = "") -> np.ndarray:
    """The array, or a `SampleError` when it holds infinite (or, unless allowed, NaN) values; `where`
    (a file's name) starts the detail."""
    bad = np.isinf(array) if allow_nan else ~np.isfinite(array)
    if array.size and bad.any():
        what = "infinite values" if allow_nan else "NaN or infinite values"
        raise SampleError(what, f"{where + ': ' if where else ''}{int(bad.sum())} of {array.size} values")
    return array


@dataclass
class Cell:
    """What reading one manifest cell may use besides its value."""

    resolve: Callable[[str], Path]  # a path written in the manifest -> the file, inside the manifest's folder
    cache: FeatureCache
    vocabulary: Vocabulary | None = None  # the column's, for kinds that learn one (`ModalityKind.vocabulary`)


@dataclass(frozen=True)
class ModalityKind:
    """One kind of modality column. Subclasses set `name` and `default_encoder` and implement `read`.

    Per step a decoded array is [T, *step_shape]; `read` returns {"data": array} plus optionally
    {"times": [T] seconds}. Bad input raises `SampleError` (one problem for that sample and column).
    """

    name: ClassVar[str] = ""
    default_encoder: ClassVar[str] = "series_linear"  # conf/model/encoder/<this>.yaml, suggested to users

    @classmethod
    def from_settings(cls, settings: Mapping | None) -> ModalityKind:
        """The kind with a manifest's `data.source.<name>` settings; unknown keys are a config error."""
        try:
            return cls(**dict(settings or {}))
        except TypeError as err:
            raise DataError(f"data.source.{cls.name} has an unknown setting ({err})") from None

    # --- one cell -> arrays ---------------------------------------------------------------------
    def read(self, value: Any, cell: Cell) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def step_shape(self) -> tuple[int, ...]:
        """The per-step shape when no sample has this column (a model still needs its encoder's size)."""
        return (1,)

    # --- what the training split teaches --------------------------------------------------------
    def vocabulary(self, train_values: list[Any]) -> Vocabulary | None:
        """A vocabulary learned from the training split's raw cells (token kinds), else None."""
        return None

    def fit(self, train: list[np.ndarray]) -> dict[str, np.ndarray] | None:
        """Statistics of the training split's decoded arrays that `prepare` uses (saved with a trained
        model, so new data is prepared alike); None: nothing to learn."""
        return None

    def prepare(
        self, data: np.ndarray, times: np.ndarray | None, stats: Mapping[str, Any] | None
    ) -> np.ndarray:
        """The array the model sees, from a decoded one and `fit`'s statistics (None: it learned none)."""
        return data

    def prepared_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-step shape `prepare` turns `shape` into."""
        return shape

    # --- what the model's encoder needs ---------------------------------------------------------
    @classmethod
    def encoder_sizes(cls, shape: tuple[int, ...], vocab_size: int | None) -> dict[str, int]:
        """The size arguments this data gives an encoder (matched to the encoder's declared `size_args`)."""
        return {"in_features": int(shape[-1])} if len(shape) == 1 else {}

    @classmethod
    def suggested_encoder(cls, shape: tuple[int, ...]) -> str:
        return cls.default_encoder


@dataclass(frozen=True)
class FileKind(ModalityKind):
    """A kind whose cells name a file, relative to the manifest; decoded arrays are cached on disk, keyed
    by `settings()` and the files' path, size and modification time. Subclasses implement `decode`."""

    # Raise when `decode` turns the same file and settings into other arrays, or accepts or refuses other
    # files: what the cache and the store hold from before (arrays and refusals) is then decoded again.
    revision: ClassVar[int] = 0

    def target(self, value: Any, resolve: Callable[[str], Path]) -> Any:
        """What `decode` reads: one file (a folder is refused)."""
        path = resolve(str(value))
        if path.is_dir():
            raise SampleError("unsupported file type", f"{value} is a folder")
        return path

    def files(self, target: Any) -> list[Path]:
        return [target]

    def settings(self) -> dict[str, Any]:
        """What the cache key hashes: a change decodes again."""
        return {"kind": self.name, **asdict(self), **self._revised()}

    def _revised(self) -> dict[str, int]:
        return {"revision": self.revision} if self.revision else {}  # revision 0: the keys from before it

    def decode(self, target: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def read(self, value: Any, cell: Cell) -> dict[str, np.ndarray]:
        target = self.target(value, cell.resolve)
        key = cell.cache.key(self.settings(), self.files(target))
        return cell.cache.get(self.name, key, lambda: self.decode(target))
