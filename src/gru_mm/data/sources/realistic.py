"""A realistic audio + image-sequence manifest, generated locally from what packages ship (no download).

Audio: the spoken digits 0-9 from `espeak-ng` (a Debian package), each SPEAKER a voice (English accent,
voice variant, pitch, speed), with per-sample speed change, silence, gain and background noise at a random
SNR. Frames: 2-8 images of the same digit per sample, drawn by one WRITER: a block of scikit-learn's real
8x8 handwritten digits (`load_digits`; its writers are not recorded, so writers are disjoint blocks of the
file, which is in collection order) or a font under /usr/share/fonts rendered with PIL, upscaled to `size`
pixels with random affine jitter, colours and noise. Splits hold out whole speakers and writers: test
speakers and writers are never seen in training.

The result is real files (16 kHz wav, png folders) and `manifest.csv` (id, label, split, audio, frames)
that `data=manifest` reads. From a script: `python -m gru_mm.data.sources.realistic OUT_DIR --n-train 600`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

SPLITS = ("train", "val", "test")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "croak")
FONT_DIR = Path("/usr/share/fonts")
SAMPLE_RATE = 16000


class GeneratorError(RuntimeError):
    """Something the generator needs is missing (espeak-ng, fonts) or a setting cannot work."""


@dataclass(frozen=True)
class RealisticSpec:
    """What to generate. Counts per split are samples; speakers/writers per split are disjoint sets."""

    n_train: int = 600
    n_val: int = 150
    n_test: int = 300
    speakers: tuple[int, int, int] = (12, 4, 6)  # train, val, test speakers
    writers: tuple[int, int, int] = (8, 2, 3)  # train, val, test writers
    writer_source: str = "handwriting"  # handwriting (scikit-learn digits), fonts, or both
    size: int = 32  # frame height and width, pixels (32-224)
    channels: int = 3  # 3: coloured RGB frames, 1: grey
    min_frames: int = 2
    max_frames: int = 8
    snr_db: tuple[float, float] = (-6.0, 6.0)  # background noise, SNR range in dB
    image_noise: float = 0.1  # std of Gaussian pixel noise on frames in [0, 1]
    jitter: float = 1.0  # scale of the affine jitter (0: centred, upright digits)
    seed: int = 0

    def check(self) -> None:
        if not 8 <= self.size <= 512:
            raise GeneratorError(f"size must be between 8 and 512 pixels, got {self.size}")
        if self.channels not in (1, 3):
            raise GeneratorError(f"channels must be 1 or 3, got {self.channels}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise GeneratorError(
                f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        if self.writer_source not in ("handwriting", "fonts", "both"):
            raise GeneratorError(
                f"writer_source must be handwriting, fonts or both, got {self.writer_source!r}"
            )
        if min(self.speakers) < 1 or min(self.writers) < 1:
            raise GeneratorError("every split needs at least one speaker and one writer")


# --- speakers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Speaker:
    voice: str  # espeak-ng voice: accent+variant
    pitch: int  # 0-99
    speed: int  # words per minute

    @property
    def name(self) -> str:
        return f"{self.voice}-p{self.pitch}-s{self.speed}"


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise GeneratorError("espeak-ng is not installed (Debian/Ubuntu: apt-get install -y espeak-ng)")
    return path


def draw_speakers(n: int, rng: np.random.Generator) -> list[Speaker]:
    """n distinct speakers: every accent x variant pair at most once, pitch and speed drawn per speaker."""
    pairs = [(a, v) for a in ACCENTS for v in VARIANTS]
    picked = rng.choice(len(pairs), size=n, replace=n > len(pairs))
    return [
        Speaker(f"{pairs[i][0]}+{pairs[i][1]}", int(rng.integers(20, 80)), int(rng.integers(120, 200)))
        for i in picked
    ]


def speak(speaker: Speaker, word: str) -> np.ndarray:
    """espeak-ng saying `word` as mono float32 at SAMPLE_RATE."""
    from scipy.signal import resample_poly

    cmd = [espeak_binary(), "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.speed)]
    out = subprocess.run([*cmd, "--stdout", word], capture_output=True, check=True, timeout=30).stdout
    wave, rate = sf.read(io.BytesIO(out), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    g = np.gcd(SAMPLE_RATE, rate)
    return resample_poly(wave, SAMPLE_RATE // g, rate // g).astype(np.float32)


def utterance(clean: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """One recording of a word: speed x0.9-1.1, 0-0.25 s of silence either side, gain, coloured noise."""
    from scipy.signal import lfilter, resample_poly

    factor = int(rng.integers(90, 111))  # tempo and pitch change together, as with a tape's speed
    wave = resample_poly(clean, 100, factor).astype(np.float32)
    pad = rng.integers(0, int(0.25 * SAMPLE_RATE), size=2)
    wave = np.concatenate([np.zeros(pad[0], np.float32), wave, np.zeros(pad[1], np.float32)])
    speech_power = float(np.mean(clean**2)) + 1e-12
    white = rng.normal(size=len(wave))
    tilt = rng.uniform(0.0, 0.95)  # 0: white noise, towards 1: rumble (more low-frequency energy)
    noise = lfilter([1.0], [1.0, -tilt], white)
    noise *= np.sqrt(speech_power / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    out = (wave + noise) * rng.uniform(0.3, 1.0)
    return (out / max(1.0, float(np.abs(out).max()) / 0.99)).astype(np.float32)


# --- writers ------------------------------------------------------------------------------------
@dataclass
class Writer:
    name: str
    glyphs: dict[int, list[np.ndarray]]  # digit -> grey images in [0, 1] (ink 1), any size


def handwriting_writers(n: int) -> list[Writer]:
    """scikit-learn's 1797 real 8x8 handwritten digits cut into n disjoint blocks, in file order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    blocks = np.array_split(np.arange(len(digits.target)), n)
    writers = []
    for k, idx in enumerate(blocks):
        glyphs = {d: [digits.images[i] / 16.0 for i in idx if digits.target[i] == d] for d in range(10)}
        if any(not g for g in glyphs.values()):
            raise GeneratorError(f"{n} handwriting writers are too many: a block lacks a digit")
        writers.append(Writer(f"hand{k:02d}", glyphs))
    return writers


def font_writers(n: int, rng: np.random.Generator) -> list[Writer]:
    """n fonts under /usr/share/fonts, each digit rendered once at 48 px."""
    fonts = sorted(p for p in FONT_DIR.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    if len(fonts) < n:
        raise GeneratorError(f"{n} font writers asked for, but {FONT_DIR} holds {len(fonts)} fonts")
    writers = []
    for i in sorted(rng.choice(len(fonts), size=n, replace=False)):
        font = ImageFont.truetype(str(fonts[i]), 40)
        glyphs = {}
        for d in range(10):
            im = Image.new("L", (48, 48), 0)
            ImageDraw.Draw(im).text((24, 24), str(d), fill=255, font=font, anchor="mm")
            glyphs[d] = [np.asarray(im, np.float32) / 255.0]
        writers.append(Writer(f"font-{fonts[i].stem}", glyphs))
    return writers


def colours(channels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ink and paper colours of one recording, always with some contrast (dark on light or light on dark)."""
    paper = rng.uniform(0, 1, channels)
    ink = np.clip(paper + np.where(paper < 0.5, 1, -1) * rng.uniform(0.4, 0.8, channels), 0, 1)
    return ink, paper


def draw_frame(
    glyph: np.ndarray, spec: RealisticSpec, ink_paper: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """A glyph at spec.size px: upscaled, rotated/scaled/sheared/shifted, coloured, noisy; uint8 HxWxC."""
    s, j = spec.size, spec.jitter
    im = Image.fromarray((np.clip(glyph, 0, 1) * 255).astype(np.uint8)).resize(
        (s, s), Image.Resampling.BICUBIC
    )
    angle = np.deg2rad(rng.uniform(-15, 15) * j)
    shear = np.deg2rad(rng.uniform(-10, 10) * j)
    scale = 1.0 + rng.uniform(-0.25, 0.05) * j
    shift = rng.uniform(-0.12, 0.12, size=2) * s * j
    # output pixel p reads input pixel A^-1 (p - c - shift) + c: rotation, shear and scale about the centre
    a = scale * np.array([[np.cos(angle), -np.sin(angle + shear)], [np.sin(angle), np.cos(angle + shear)]])
    inv = np.linalg.inv(a)
    c = np.array([s / 2, s / 2])
    off = c - inv @ (c + shift)
    im = im.transform(
        (s, s), Image.Transform.AFFINE, (*inv[0], off[0], *inv[1], off[1]), Image.Resampling.BILINEAR
    )
    ink = np.asarray(im, np.float32)[..., None] / 255.0
    fg, bg = ink_paper
    pixels = bg * (1 - ink) + fg * ink + rng.normal(0, spec.image_noise, (s, s, spec.channels))
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


# --- the data set -------------------------------------------------------------------------------
def _writers(spec: RealisticSpec, rng: np.random.Generator) -> list[Writer]:
    total = sum(spec.writers)
    if spec.writer_source == "handwriting":
        return handwriting_writers(total)
    if spec.writer_source == "fonts":
        return font_writers(total, rng)
    hand = handwriting_writers(total - total // 2)
    fonts = font_writers(total // 2, rng)
    mixed = [w for pair in zip(hand, fonts, strict=False) for w in pair] + hand[len(fonts) :]
    return mixed[:total]


def _by_split(items: list, counts: tuple[int, int, int]) -> dict[str, list]:
    edges = np.cumsum((0, *counts))
    return {split: items[edges[i] : edges[i + 1]] for i, split in enumerate(SPLITS)}


def generate(root: str | Path, spec: RealisticSpec | None = None, **settings) -> Path:
    """Write the data set under root (wav files, png folders, manifest.csv, spec.json); returns the
    manifest's path. `settings` override RealisticSpec's fields. The same spec writes the same files."""
    spec = spec or RealisticSpec(**settings)
    spec.check()
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    speakers = _by_split(draw_speakers(sum(spec.speakers), rng), spec.speakers)
    writers = _by_split(_writers(spec, rng), spec.writers)
    clean = {sp.name: [speak(sp, w) for w in DIGIT_WORDS] for split in SPLITS for sp in speakers[split]}
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    counts = dict(zip(SPLITS, (spec.n_train, spec.n_val, spec.n_test), strict=True))
    for split in SPLITS:
        for i in range(counts[split]):
            sid = f"{split}{i:05d}"
            digit = int(rng.integers(10))
            speaker = speakers[split][rng.integers(len(speakers[split]))]
            writer = writers[split][rng.integers(len(writers[split]))]
            wave = utterance(clean[speaker.name][digit], float(rng.uniform(*spec.snr_db)), rng)
            sf.write(str(root / "audio" / f"{sid}.wav"), wave, SAMPLE_RATE, subtype="PCM_16")
            folder = root / "frames" / sid
            folder.mkdir(parents=True, exist_ok=True)
            pool, ink_paper = writer.glyphs[digit], colours(spec.channels, rng)
            for t in range(int(rng.integers(spec.min_frames, spec.max_frames + 1))):
                frame = draw_frame(pool[rng.integers(len(pool))], spec, ink_paper, rng)
                Image.fromarray(frame.squeeze(-1) if spec.channels == 1 else frame).save(
                    folder / f"{t:03d}.png"
                )
            rows.append(
                {
                    "id": sid,
                    "label": str(digit),
                    "split": split,
                    "audio": f"audio/{sid}.wav",
                    "frames": f"frames/{sid}",
                    "speaker": speaker.name,
                    "writer": writer.name,
                }
            )
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    record = {**asdict(spec), "speakers_by_split": {s: [sp.name for sp in speakers[s]] for s in SPLITS}}
    record["writers_by_split"] = {s: [w.name for w in writers[s]] for s in SPLITS}
    (root / "spec.json").write_text(json.dumps(record, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write (manifest.csv, audio/, frames/)")
    for name in ("n_train", "n_val", "n_test", "size", "channels", "min_frames", "max_frames", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(RealisticSpec, name))
    p.add_argument("--image-noise", type=float, default=RealisticSpec.image_noise)
    p.add_argument("--writer-source", default=RealisticSpec.writer_source)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    try:
        print(generate(out, **args))
    except GeneratorError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
