"""Per-modality decoders: a file (or string) -> a float array [T, ...]; bad input raises `SampleError`.

Each decoder has `settings()` (what the cache key hashes) and `files(value)` (the files it reads).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gru_mm.data.cache import read_npy
from gru_mm.data.sources.base import SampleError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SERIES_SUFFIXES = (".npy", ".csv")


def _finite(array: np.ndarray, allow_nan: bool = False) -> np.ndarray:
    bad = np.isinf(array) if allow_nan else ~np.isfinite(array)
    if array.size and bad.any():
        what = "infinite values" if allow_nan else "NaN or infinite values"
        raise SampleError(what, f"{int(bad.sum())} of {array.size} values")
    return array


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


def _wav_declared_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a WAV file's data chunk; libsndfile silently reads a cut file short."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while chunk := fh.read(8):
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                start = fh.tell()
                present = path.stat().st_size - start
                return size, present
            fh.seek(size + (size & 1), 1)
    return None


@dataclass(frozen=True)
class AudioTransform:
    """Any rate and channel count -> mono at `sample_rate` -> log-mel frames [T, n_mels]."""

    sample_rate: int = 16000
    n_mels: int = 40
    n_fft: int = 400
    hop_length: int = 160
    f_min: float = 0.0
    f_max: float | None = None

    def settings(self) -> dict:
        return {"kind": "audio", **asdict(self)}

    def files(self, path: Path) -> list[Path]:
        return [path]

    def read(self, path: Path) -> tuple[np.ndarray, int]:
        """Mono float32 samples and their rate; checks the file is whole."""
        import soundfile as sf

        if path.suffix.lower() not in AUDIO_SUFFIXES:
            raise SampleError("unsupported file type", f"{path.name} (audio must be {'/'.join(AUDIO_SUFFIXES)})")
        try:
            info = sf.info(str(path))
            wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as err:  # libsndfile's messages: "Format not recognised", ...
            raise SampleError("unreadable audio", f"{path.name}: {err}") from None
        if path.suffix.lower() == ".wav" and (sizes := _wav_declared_bytes(path)) and sizes[1] < sizes[0]:
            raise SampleError("truncated audio", f"{path.name} holds {sizes[1]} of its {sizes[0]} data bytes")
        if info.frames > 0 and len(wave) < info.frames:
            raise SampleError("truncated audio", f"{path.name} decodes {len(wave)} of its {info.frames} frames")
        if len(wave) == 0:
            raise SampleError("empty audio", f"{path.name} has no samples")
        return _finite(wave.mean(axis=1)), rate

    def __call__(self, path: Path) -> dict[str, np.ndarray]:
        import torchaudio

        wave, rate = self.read(path)
        x = torch.from_numpy(wave)
        if rate != self.sample_rate:
            x = torchaudio.functional.resample(x, rate, self.sample_rate)
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels,
            f_min=self.f_min, f_max=self.f_max,
        )
        logmel = torch.log(mel(x) + 1e-6).T.contiguous().numpy()  # [T, n_mels]
        # frame centres in seconds, for modalities fused on a common clock
        times = (np.arange(len(logmel)) * self.hop_length / self.sample_rate).astype(np.float32)
        return {"data": logmel, "times": times}


@dataclass(frozen=True)
class FrameTransform:
    """A folder of images (sorted by name) or a list of image files -> [T, C, H, W] floats in [0, 1]."""

    height: int = 64
    width: int = 64
    channels: int = 3
    fps: float | None = None

    def settings(self) -> dict:
        return {"kind": "frames", **asdict(self)}

    def files(self, value: Path | list[Path]) -> list[Path]:
        if isinstance(value, list):
            return value
        if not value.is_dir():
            return [value]
        images = sorted(p for p in value.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SampleError("no images", f"folder {value.name} holds no {'/'.join(IMAGE_SUFFIXES)} files")
        return images

    def _image(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise SampleError("unsupported file type", f"{path.name} (frames must be {'/'.join(IMAGE_SUFFIXES)})")
        try:
            with Image.open(path) as im:
                im.load()
                im = im.convert("L" if self.channels == 1 else "RGB")
                im = im.resize((self.width, self.height), Image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.float32) / 255.0
        except UnidentifiedImageError:
            raise SampleError("unreadable image", f"{path.name} is not an image") from None
        except OSError as err:
            kind = "truncated image" if "truncated" in str(err) else "unreadable image"
            raise SampleError(kind, f"{path.name}: {err}") from None
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def __call__(self, value: Path | list[Path]) -> dict[str, np.ndarray]:
        frames = np.stack([self._image(p) for p in self.files(value)])
        out = {"data": frames}
        if self.fps:
            out["times"] = (np.arange(len(frames)) / self.fps).astype(np.float32)
        return out


@dataclass(frozen=True)
class SeriesTransform:
    """A `.npy` array [T, F] (or [T]) or a `.csv` table with an optional time column -> [T, F] floats.

    missing="error": a NaN (an empty CSV cell) is a problem; "mask": NaNs are kept (the source turns
    them into `with_missingness` inputs after standardising).
    """

    time_column: str = "time"
    missing: str = "error"

    def settings(self) -> dict:
        return {"kind": "series", **asdict(self)}

    def files(self, path: Path) -> list[Path]:
        return [path]

    def __call__(self, path: Path) -> dict[str, np.ndarray]:
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
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise SampleError("wrong array rank", f"{path.name} has shape {list(array.shape)}, expected [T, F]")
        if array.shape[0] == 0:
            raise SampleError("empty series", f"{path.name} has no steps")
        out = {"data": _finite(array.astype(np.float32), allow_nan=self.missing == "mask")}
        if times is not None:
            out["times"] = times
        return out

    def _csv(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        import pandas as pd

        try:
            table = pd.read_csv(path)
        except (ValueError, OSError, UnicodeDecodeError) as err:  # pandas' EmptyDataError/ParserError are ValueErrors
            raise SampleError("unreadable table", f"{path.name}: {err}") from None
        for column in table.columns:
            if not pd.api.types.is_numeric_dtype(table[column]):
                raise SampleError("non-numeric values", f"{path.name} column {column!r}")
        times = None
        if self.time_column in table.columns:
            times = _finite(table.pop(self.time_column).to_numpy(np.float32))
            if len(times) > 1 and (np.diff(times) < 0).any():
                raise SampleError("time goes backwards", f"{path.name} column {self.time_column!r}")
        if table.shape[1] == 0:
            raise SampleError("empty series", f"{path.name} has no value columns")
        return table.to_numpy(), times


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
