"""`avdigits`: a built-in audio + video data set generated locally from scikit-learn's handwritten digits.

The task needs both modalities. Class c (0-9) is split into a video part and an audio part:
  video: 3-40 frames of real handwritten digits (sklearn's 8x8 scans), showing digit (c % 5) or
         (c % 5) + 5 at random, mixed with noise frames: it tells c % 5, never c // 5;
  audio: 0.2-3 s of DTMF key presses with gaps and noise, the keys drawn from the half of the
         keypad that c // 5 selects ({0..4} or {5..9}): it tells c // 5, never c % 5.
So video alone can reach at most 50 %, audio alone at most 20 %, both together 100 %.
Handwriting scans are split between train/val/test, so test frames are unseen writers' digits.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from gru_mm.data.batch import Sample
from gru_mm.data.cache import cached, fingerprint
from gru_mm.data.sources.base import check_storage
from gru_mm.data.store.shard import TMP_PREFIX, IncompleteShard, ShardReader, ShardWriter
from gru_mm.data.store.split import StoreSplit

# DTMF (row Hz, column Hz) for each digit key.
DTMF = {
    1: (697, 1209),
    2: (697, 1336),
    3: (697, 1477),
    4: (770, 1209),
    5: (770, 1336),
    6: (770, 1477),
    7: (852, 1209),
    8: (852, 1336),
    9: (852, 1477),
    0: (941, 1336),
}
SPLITS = ("train", "val", "test")
SHARD_ROWS = 1000


@dataclass(frozen=True)
class AVDigitsSettings:
    n_train: int = 3000
    n_val: int = 500
    n_test: int = 1000
    seed: int = 0
    min_frames: int = 3
    max_frames: int = 40
    noise_frame_prob: float = 0.2
    min_seconds: float = 0.2
    max_seconds: float = 3.0
    sample_rate: int = 8000
    snr_db: float = 10.0
    n_mels: int = 40
    n_fft: int = 256
    hop_length: int = 128
    f_max: float = 2000.0


class AVDigits:
    """Generates (once, then from cache) the three splits as lists of `Sample`s."""

    name = "avdigits"
    num_classes = 10
    modalities = ("audio", "video")
    kinds = {"audio": "audio", "video": "frames"}  # modality -> kind (gru_mm.data.kinds)
    task = "multiclass"

    def __init__(self, cache_dir: str | Path, storage: str = "store", **settings):
        self.storage = check_storage(storage)
        self.settings = AVDigitsSettings(**settings)
        for key in ("n_train", "n_val", "n_test", "min_frames", "sample_rate", "n_mels"):
            if getattr(self.settings, key) < 1:
                raise ValueError(f"data.source.{key} must be >= 1, got {getattr(self.settings, key)}")
        if not 0 < self.settings.min_seconds <= self.settings.max_seconds:
            raise ValueError("data.source.min_seconds must be > 0 and <= data.source.max_seconds")
        if self.settings.min_frames > self.settings.max_frames:
            raise ValueError("data.source.min_frames must be <= data.source.max_frames")
        self.cache_dir = Path(cache_dir)
        self._splits: dict[str, list[Sample]] | None = None

    @property
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"audio": (self.settings.n_mels,), "video": (1, 8, 8)}

    @property
    def fingerprint(self) -> str:
        """A digest of the generator's settings: the same settings generate the same data."""
        return fingerprint({"source": self.name, **asdict(self.settings)})

    @property
    def cache_path(self) -> Path:
        """data.storage=memory: every split pickled in one file."""
        return self.cache_dir / f"avdigits-{fingerprint(asdict(self.settings))}.pt"

    @property
    def store_path(self) -> Path:
        """data.storage=store: a folder of shards per split, renamed into place when complete."""
        return self.cache_dir / f"avdigits-{fingerprint(asdict(self.settings))}-store"

    def load(self) -> dict[str, list[Sample]]:
        if self._splits is None:
            if self.storage == "memory":
                self._splits = cached(self.cache_path, self._generate)
            else:
                self._splits = self._from_store()
        return self._splits

    def _from_store(self) -> dict[str, StoreSplit]:
        """The splits read from the store, generated into it first if it is not there (or incomplete)."""
        for _ in range(2):
            try:
                shards = {
                    split: [ShardReader(p) for p in sorted(self.store_path.glob(f"{split}-*"))]
                    for split in SPLITS
                }
            except IncompleteShard:
                shutil.rmtree(self.store_path, ignore_errors=True)
                shards = {}
            if shards and all(shards.values()):
                return {
                    split: StoreSplit(
                        parts,
                        [(s, j) for s, part in enumerate(parts) for j in range(part.rows)],
                        [t for part in parts for t in part.targets],
                        self.modalities,
                        times=False,
                    )
                    for split, parts in shards.items()
                }
            self._write_store()
        raise RuntimeError(f"the avdigits store at {self.store_path} could not be read after writing it")

    def _write_store(self) -> None:
        """Generate every split into shards in a temporary folder, then rename it into place: a killed
        run leaves a .tmp- folder that no run reads. Generated sample by sample: nothing held."""
        tmp = self.cache_dir / f"{TMP_PREFIX}{self.store_path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        writer, count = None, {split: 0 for split in SPLITS}
        try:
            for split, sample in self._samples():
                if writer is None or writer.rows == SHARD_ROWS or not writer.path.name.startswith(split):
                    if writer is not None:
                        writer.commit()
                    writer = ShardWriter(tmp / f"{split}-{count[split] // SHARD_ROWS:05d}")
                writer.add(sample.id, sample.modalities, target=sample.target)
                count[split] += 1
            if writer is not None:
                writer.commit()
            os.rename(tmp, self.store_path)
        except OSError:
            if not self.store_path.is_dir():  # another process renamed its copy first: keep it
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def split(self, name: str) -> list[Sample]:
        return self.load()[name]

    def _generate(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {split: [] for split in SPLITS}
        for split, sample in self._samples():
            out[split].append(sample)
        return out

    def _samples(self) -> Iterator[tuple[str, Sample]]:
        """(split, sample) pairs, generated one at a time from the seed."""
        from sklearn.datasets import load_digits  # ships with scikit-learn: no download

        s = self.settings
        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)
        rng = np.random.default_rng(s.seed)
        order = rng.permutation(len(images))
        # Disjoint handwriting pools per split (60/15/25 %).
        cut1, cut2 = int(0.6 * len(order)), int(0.75 * len(order))
        pools = dict(zip(SPLITS, (order[:cut1], order[cut1:cut2], order[cut2:]), strict=True))
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, n_mels=s.n_mels, f_max=s.f_max
        )
        for split, n in zip(SPLITS, (s.n_train, s.n_val, s.n_test), strict=True):
            by_digit = {d: pools[split][digits.target[pools[split]] == d] for d in range(10)}
            for i in range(n):
                c = int(rng.integers(10))
                video = self._video(rng, images, by_digit, c)
                wave = self._audio(rng, c)
                logmel = torch.log(mel(torch.from_numpy(wave)) + 1e-6).T.contiguous()  # [T, n_mels]
                yield split, Sample(f"{split}-{i:05d}", c, {"audio": logmel.numpy(), "video": video})

    def _video(self, rng, images, by_digit, c: int) -> np.ndarray:
        s = self.settings
        n = int(rng.integers(s.min_frames, s.max_frames + 1))
        frames = np.empty((n, 1, 8, 8), dtype=np.float32)
        for t in range(n):
            if rng.random() < s.noise_frame_prob:
                frames[t, 0] = rng.random((8, 8)) * 0.5
            else:
                digit = c % 5 + 5 * int(rng.integers(2))
                frames[t, 0] = images[rng.choice(by_digit[digit])]
        return frames

    def _audio(self, rng, c: int) -> np.ndarray:
        s = self.settings
        total = int(rng.uniform(s.min_seconds, s.max_seconds) * s.sample_rate)
        wave = np.zeros(total, dtype=np.float32)
        keys = range(5) if c // 5 == 0 else range(5, 10)
        pos = int(rng.integers(0, max(1, total // 10)))
        while pos < total:
            dur = int(rng.uniform(0.06, 0.3) * s.sample_rate)
            lo, hi = DTMF[int(rng.choice(list(keys)))]
            t = np.arange(min(dur, total - pos)) / s.sample_rate
            wave[pos : pos + len(t)] = (
                rng.uniform(0.3, 1.0) * (np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)) / 2
            )
            pos += dur + int(rng.uniform(0.03, 0.3) * s.sample_rate)
        noise_rms = np.sqrt(np.mean(wave**2) + 1e-8) / (10 ** (s.snr_db / 20))
        return wave + rng.normal(0, noise_rms, total).astype(np.float32)
