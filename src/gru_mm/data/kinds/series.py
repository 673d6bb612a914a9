"""`series`: a numeric series, `.npy` [T, F] (or [T]) or `.csv` with an optional time column -> [T, F] floats.

Each feature is standardised with the training split's mean and std (`normalize`). missing="error": a NaN
(an empty CSV cell) is a problem; "mask": NaNs become `with_missingness` inputs after standardising.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gru_mm.data.cache import read_npy
from gru_mm.data.kinds.base import FileKind, check_finite
from gru_mm.data.sources.base import DataError, SampleError

SERIES_MISSING = ("error", "mask")


def with_missingness(values: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
    """[T, F] with NaN where a feature was not measured -> [T, 3F]: the last measured value carried
    forward (0 before the first), whether it was measured at this step (1/0), and log(1 + time since
    it was last measured) (since the series' start before the first), in the series' time unit (steps
    without times). The inputs of GRU-Simple (Che et al. 2018, "Recurrent Neural Networks for
    Multivariate Time Series with Missing Values")."""
    steps, features = values.shape
    observed = ~np.isnan(values)
    t = np.arange(steps, dtype=np.float64) if times is None else times[:steps].astype(np.float64)
    last = np.maximum.accumulate(np.where(observed, np.arange(steps)[:, None], -1), axis=0)
    seen = last >= 0
    at = np.clip(last, 0, None)
    filled = np.where(seen, values[at, np.arange(features)], 0.0)
    since = t[:, None] - np.where(seen, t[at], t[0])
    return np.concatenate([filled, observed, np.log1p(since)], axis=1).astype(np.float32)


def _read_table(path: Path):
    """The CSV as a DataFrame. Spreadsheets set to a European locale (German, French, ...) export with
    semicolons or tabs between fields and a decimal comma ("1,5"): the header line shows the separator,
    and the first rows whether its numbers have decimal commas."""
    import pandas as pd

    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header, rows = fh.readline(), [line for _, line in zip(range(50), fh, strict=False)]
    sep = max((",", ";", "\t"), key=header.count)  # ties (none of them): a comma, pandas' default
    if sep == "," or not header.count(sep):
        return pd.read_csv(path)
    comma = any(_DECIMAL_COMMA.match(field.strip()) for row in rows for field in row.split(sep))
    return pd.read_csv(path, sep=sep, decimal="," if comma else ".")


_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")


def _is_number(name: object) -> bool:
    try:
        float(str(name))
    except ValueError:
        return False
    return True


def _seconds(column, file: str, name: str) -> np.ndarray:
    """A time column as float32 seconds: numbers as they are; ISO 8601 date-times (what loggers write,
    "2024-05-01 10:00:00.5") as seconds since the first row."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(np.float32)
    try:
        # utc: offsets may change within a recording (daylight saving); naive times are read as UTC
        stamps = pd.to_datetime(column, format="ISO8601", utc=True)
    except (ValueError, TypeError):
        raise SampleError(
            "non-numeric values", f"{file} column {name!r} holds neither numbers nor ISO 8601 date-times"
        ) from None
    return (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy(np.float32)


@dataclass(frozen=True)
class Series(FileKind):
    name = "series"
    default_encoder = "series_conv"
    revision = 1  # 1: time column in any case, date-times, trailing commas, ; or tab with decimal commas;
    # CSVs without a header refused

    time_column: str = "time"
    missing: str = "error"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.missing not in SERIES_MISSING:
            raise DataError(
                f"data.source.series.missing={self.missing!r} must be one of {', '.join(SERIES_MISSING)}"
            )

    def settings(self) -> dict[str, Any]:
        # standardising happens after the cache: `normalize` is not part of what a file decodes to
        settings = {"kind": self.name, "time_column": self.time_column, "missing": self.missing}
        return settings | self._revised()

    def decode(self, path: Path) -> dict[str, np.ndarray]:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                array = read_npy(path)
            except (ValueError, OSError, EOFError) as err:
                raise SampleError("unreadable array", f"{path.name}: {err}") from None
            times = None
        elif suffix == ".csv":
            array, times = self._csv(path)
        else:
            raise SampleError("unsupported file type", f"{path.name} (series must be .npy or .csv)")
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise SampleError("non-numeric values", f"{path.name} has dtype {array.dtype}")
        if np.iscomplexobj(array):  # casting to float would silently drop the imaginary part
            raise SampleError(
                "complex values",
                f"{path.name} has dtype {array.dtype}: save the real and imaginary parts as two features",
            )
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise SampleError(
                "wrong array rank", f"{path.name} has shape {list(array.shape)}, expected [T, F]"
            )
        if array.shape[0] == 0:
            raise SampleError("empty series", f"{path.name} has no steps")
        if self.missing == "error" and np.isnan(array).any():
            raise SampleError(
                "NaN or infinite values",
                f"{path.name}: {int(np.isnan(array).sum())} of {array.size} values are NaN or empty "
                "(set data.source.series.missing=mask if they are unmeasured values)",
            )
        values = check_finite(array, allow_nan=self.missing == "mask", where=path.name)
        with np.errstate(over="ignore"):
            values = values.astype(np.float32)
        if np.isinf(values).any():  # finite float64 values beyond float32's range
            raise SampleError("values too large", f"{path.name} holds values beyond float32's +-3.4e38")
        out = {"data": values}
        if times is not None:
            out["times"] = times
        return out

    def _csv(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        import pandas as pd

        try:
            table = _read_table(path)
        except UnicodeDecodeError:  # a spreadsheet's plain CSV on Windows is cp1252
            problem = f"{path.name} is not UTF-8 text: save it as UTF-8"
            raise SampleError("unreadable table", problem) from None
        except (ValueError, OSError) as err:  # pandas' EmptyDataError/ParserError are ValueErrors
            raise SampleError("unreadable table", f"{path.name}: {err}") from None
        # a comma ending every line (some loggers, spreadsheet exports) adds an empty, unnamed column
        empty = [c for c in table.columns if str(c).startswith("Unnamed: ") and table[c].isna().all()]
        table = table.drop(columns=empty)
        if len(table.columns) and all(_is_number(c) for c in table.columns):
            # without a header pandas takes the first row for column names: one step would vanish silently
            raise SampleError(
                "no header row",
                f"{path.name} starts with numbers ({', '.join(map(str, table.columns[:4]))}); a series CSV's "
                "first line names its columns",
            )
        if len(table) == 0:
            raise SampleError("empty series", f"{path.name} has a header but no rows")
        times = None
        if (name := self._time_column(table.columns)) is not None:
            times = check_finite(_seconds(table.pop(name), path.name, name), where=path.name)
            if len(times) > 1 and (np.diff(times) < 0).any():
                raise SampleError("time goes backwards", f"{path.name} column {name!r}")
        for column in table.columns:
            if not pd.api.types.is_numeric_dtype(table[column]):
                raise SampleError("non-numeric values", f"{path.name} column {column!r}")
        if table.shape[1] == 0:
            raise SampleError("empty series", f"{path.name} has no value columns")
        return table.to_numpy(np.float64), times  # bool columns (True/False) as 1/0

    def _time_column(self, columns) -> Any:
        """`time_column`, or the column named so in another case or with spaces ("Time", " time")."""
        if self.time_column in columns:
            return self.time_column
        wanted = self.time_column.strip().lower()
        return next((c for c in columns if str(c).strip().lower() == wanted), None)

    def fit(self, train: list[np.ndarray]) -> dict[str, np.ndarray] | None:
        """Each feature's mean and std over the training split's steps (measured values only)."""
        if not self.normalize or not train:
            return None
        steps = np.concatenate(train)
        observed = ~np.isnan(steps)  # with missing=mask: statistics of measured values only
        count = np.maximum(observed.sum(0), 1)
        mean = np.where(observed, steps, 0).sum(0) / count
        std = np.sqrt(np.where(observed, (steps - mean) ** 2, 0).sum(0) / count)
        return {"mean": mean.astype(np.float32), "std": np.where(std > 1e-8, std, 1.0).astype(np.float32)}

    def prepare(
        self, data: np.ndarray, times: np.ndarray | None, stats: Mapping[str, Any] | None
    ) -> np.ndarray:
        if stats is not None:
            data = (data - np.asarray(stats["mean"], dtype=np.float32)) / np.asarray(
                stats["std"], dtype=np.float32
            )
        return with_missingness(data, times) if self.missing == "mask" else data

    def prepared_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (3 * shape[0],) if self.missing == "mask" else shape
