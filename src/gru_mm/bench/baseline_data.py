"""Generated data sets, one modality each, on which an encoder is compared with logistic regression.

Each writes real files and a `manifest.csv` (id, label, split, <modality>) that `data=manifest` reads;
test samples come from speakers / writers / sources never seen in training.

- `vowels`: 8 vowels of English, each clip synthesised through a formant filter (three resonators at the
  vowel's formants, Hillenbrand et al. 1995, scaled by the speaker's vocal tract) from a glottal pulse
  train at the speaker's pitch, with jitter, an onset and decay, and background noise at a random SNR.
- `topics`: 4 topics of short documents; each word comes from its topic's keywords (shared in part with
  the neighbouring topic) or from a background Zipf vocabulary; each author has a style of its own.
- `signals`: 4 classes of 3-channel series of 30-120 steps in AR(1) noise: a fast or slow oscillation
  on one channel, the fast one on another channel, or a transient burst at a random time.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

SPLITS = ("train", "val", "test")
SAMPLE_RATE = 16000
# F1, F2, F3 (Hz) of adult male speakers (Hillenbrand et al. 1995)
VOWELS = {
    "i": (342, 2322, 3000),
    "ih": (427, 2034, 2684),
    "eh": (580, 1799, 2605),
    "ae": (588, 1952, 2601),
    "ah": (768, 1333, 2522),
    "aw": (652, 997, 2538),
    "oo": (469, 1122, 2434),
    "u": (378, 997, 2343),
}


def _write_manifest(root: Path, rows: list[dict]) -> Path:
    path = root / "manifest.csv"
    root.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _groups(counts: tuple[int, int, int], rng: np.random.Generator, draw) -> dict[str, list]:
    """Disjoint groups (speakers, authors, sources) per split."""
    return {split: [draw(rng) for _ in range(n)] for split, n in zip(SPLITS, counts, strict=True)}


def _resonator(x: np.ndarray, freq: float, bandwidth: float, rate: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * freq / rate
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1 - r], a, x)


def vowel_clip(vowel: str, speaker: dict, rng: np.random.Generator) -> np.ndarray:
    """One spoken vowel of `speaker` ({f0, tract, offsets}), with noise: float32 samples at 16 kHz."""
    seconds = rng.uniform(0.25, 0.6)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # pitch: the speaker's, a falling contour, vibrato and jitter
    f0 = speaker["f0"] * rng.uniform(0.9, 1.1) * (1 - 0.15 * t / seconds)
    f0 = f0 * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t)) * (1 + 0.01 * rng.standard_normal(n))
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
    source = lfilter([1.0], [1.0, -0.97], pulses) + 0.02 * rng.standard_normal(n)  # glottal tilt + breath
    out = source
    for k, (formant, bandwidth) in enumerate(zip(VOWELS[vowel], (80, 100, 140), strict=True)):
        f = formant * speaker["tract"] * speaker["offsets"][k] * rng.uniform(0.95, 1.05)
        out = _resonator(out, f, bandwidth, SAMPLE_RATE)
    envelope = np.minimum(1.0, t / 0.03) * np.minimum(1.0, (seconds - t) / 0.08)
    clip = out * envelope
    clip = clip / (np.abs(clip).max() + 1e-9) * rng.uniform(0.3, 0.9)
    lead = rng.integers(0, int(0.15 * SAMPLE_RATE))
    clip = np.concatenate([np.zeros(lead), clip, np.zeros(rng.integers(0, int(0.1 * SAMPLE_RATE)))])
    snr_db = rng.uniform(0, 20)
    noise = rng.standard_normal(len(clip))
    noise *= np.sqrt(np.mean(clip**2) / 10 ** (snr_db / 10)) / (noise.std() + 1e-9)
    return (clip + noise).astype(np.float32)


def _speaker(rng: np.random.Generator) -> dict:
    size = rng.uniform(0, 1)  # larger tract, lower voice
    return {
        "f0": 90 + 160 * (1 - size) + rng.normal(0, 15),
        "tract": 1.25 - 0.35 * size + rng.normal(0, 0.03),
        "offsets": rng.uniform(0.93, 1.07, 3),
    }


def vowels(root: str | Path, per_speaker: int = 48, speakers=(16, 4, 8), seed: int = 0) -> Path:
    """`per_speaker` clips of each speaker (classes balanced); returns the manifest path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = list(VOWELS)
    rows = []
    for split, group in _groups(speakers, rng, _speaker).items():
        for s, speaker in enumerate(group):
            for i in range(per_speaker):
                vowel = names[i % len(names)]
                rel = f"audio/{split}{s}_{i}.wav"
                (root / "audio").mkdir(parents=True, exist_ok=True)
                sf.write(root / rel, vowel_clip(vowel, speaker, rng), SAMPLE_RATE)
                rows.append({"id": f"{split}{s}_{i}", "label": vowel, "split": split, "audio": rel})
    return _write_manifest(root, rows)


def _pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "pl"]
    nuclei = ["a", "e", "i", "o", "u", "ai", "ou"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(onsets) + rng.choice(nuclei) for _ in range(rng.integers(1, 4))))
    return sorted(words)


def topics(root: str | Path, per_author: int = 40, authors=(20, 5, 10), seed: int = 0) -> Path:
    """Documents of 4 topics by disjoint authors per split; returns the manifest path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    vocab = _pseudo_words(600, rng)
    background = np.arange(1, 401, dtype=float) ** -1.1
    background /= background.sum()
    n_topics, k = 4, 30
    keywords = [vocab[400 + t * k // 2 : 400 + t * k // 2 + k] for t in range(n_topics)]  # half shared

    def author(r: np.random.Generator) -> dict:
        return {"topical": r.uniform(0.15, 0.35), "style": r.choice(400, 20, replace=False)}

    rows = []
    for split, group in _groups(authors, rng, author).items():
        for a, who in enumerate(group):
            for i in range(per_author):
                topic = i % n_topics
                words = []
                for _ in range(rng.integers(8, 40)):
                    u = rng.uniform()
                    if u < who["topical"]:
                        words.append(rng.choice(keywords[topic]))
                    elif u < who["topical"] + 0.15:
                        words.append(vocab[rng.choice(who["style"])])
                    else:
                        words.append(vocab[rng.choice(400, p=background)])
                rows.append(
                    {
                        "id": f"{split}{a}_{i}",
                        "label": f"topic{topic}",
                        "split": split,
                        "text": " ".join(words),
                    }
                )
    return _write_manifest(root, rows)


def signal(label: int, source: dict, rng: np.random.Generator) -> np.ndarray:
    """[T, 3] float32: AR(1) noise plus the class's pattern."""
    n = int(rng.integers(30, 121))
    noise = lfilter([1.0], [1.0, -source["ar"]], rng.standard_normal((3, n)), axis=1).T
    noise = noise / noise.std() * source["noise"]
    t = np.arange(n)
    amp = rng.uniform(0.6, 1.2)
    x = noise + source["offset"]
    if label in (0, 2):  # fast oscillation on channel 0 or 1
        x[:, 0 if label == 0 else 1] += amp * np.sin(2 * np.pi * t / rng.uniform(6, 10) + rng.uniform(0, 6.3))
    elif label == 1:  # slow oscillation on channel 0
        x[:, 0] += amp * np.sin(2 * np.pi * t / rng.uniform(16, 28) + rng.uniform(0, 6.3))
    else:  # a burst at a random time on channel 0
        centre, width = rng.uniform(0.1, 0.9) * n, rng.uniform(3, 8)
        x[:, 0] += 2.5 * amp * np.exp(-0.5 * ((t - centre) / width) ** 2) * np.sin(2 * np.pi * t / 4)
    return x.astype(np.float32)


def signals(root: str | Path, per_source: int = 40, sources=(20, 5, 10), seed: int = 0) -> Path:
    """Series of 4 classes from disjoint sources (sensors) per split; returns the manifest path."""
    root = Path(root)
    rng = np.random.default_rng(seed)

    def source(r: np.random.Generator) -> dict:
        return {"ar": r.uniform(0.3, 0.8), "noise": r.uniform(0.6, 1.0), "offset": r.normal(0, 0.5, 3)}

    rows = []
    (root / "series").mkdir(parents=True, exist_ok=True)
    for split, group in _groups(sources, rng, source).items():
        for s, src in enumerate(group):
            for i in range(per_source):
                label = i % 4
                rel = f"series/{split}{s}_{i}.npy"
                np.save(root / rel, signal(label, src, rng))
                rows.append({"id": f"{split}{s}_{i}", "label": f"c{label}", "split": split, "series": rel})
    return _write_manifest(root, rows)


GENERATORS = {"audio": vowels, "text": topics, "series": signals}
