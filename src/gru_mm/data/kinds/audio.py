"""`audio`: a sound file (any rate and channel count) -> log-mel frames [T, n_mels], or the raw waveform
[T, 1] for encoders that read samples (wav2vec 2.0, HuBERT)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gru_mm.data.kinds import audio_windows
from gru_mm.data.kinds.base import FileKind, check_finite
from gru_mm.data.sources.base import DataError, SampleError

# what libsndfile reads: .mp3 since 1.1 (soundfile's wheels bundle 1.2); .opus is Ogg Opus (voice notes)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")
FEATURES = ("logmel", "waveform")  # what a decoded clip holds per step


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


def _read_mono(path: Path, frames: int, block: int = 1 << 20) -> np.ndarray:
    """The file mixed down to mono float32, read a block at a time: a long multichannel recording
    never sits in memory whole (10 minutes of 48 kHz stereo: 230 MB). frames: the file's declared
    length, to fill in place (0: unknown, the blocks are joined)."""
    import soundfile as sf

    mono = np.empty(frames, dtype=np.float32)
    extra, n = [], 0
    for chunk in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
        m = chunk.mean(axis=1)
        fit = max(0, min(len(m), frames - n))
        mono[n : n + fit] = m[:fit]
        if fit < len(m):
            extra.append(m[fit:])
        n += len(m)
    return np.concatenate([mono[: min(n, frames)], *extra]) if extra or n < frames else mono


@dataclass(frozen=True)
class Audio(FileKind):
    """Mono at `sample_rate`, then log-mel frames with their centre times in seconds; with
    `features="waveform"` the samples themselves, one per step (no times: a step is 1 / sample_rate)."""

    name = "audio"
    default_encoder = "audio_conv"
    revision = 1  # 1: .opus/.mp3/.aiff read, clips shorter than half a window, WAVs with unknown sizes

    sample_rate: int = 16000
    n_mels: int = 40
    n_fft: int = 400
    hop_length: int = 160
    f_min: float = 0.0
    f_max: float | None = None
    features: str = "logmel"

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise DataError(
                f"data.source.audio.features={self.features!r} is not one of {', '.join(FEATURES)}"
            )

    def step_shape(self) -> tuple[int, ...]:
        return (1,) if self.features == "waveform" else (self.n_mels,)

    def settings(self) -> dict:
        settings = super().settings()
        if self.features == "logmel":  # log-mel clips cached before this setting existed keep their keys
            del settings["features"]
        return settings

    def read_wave(self, path: Path) -> tuple[np.ndarray, int]:
        """Mono float32 samples and their rate; checks the file is whole."""
        import soundfile as sf

        if path.suffix.lower() not in AUDIO_SUFFIXES:
            raise SampleError(
                "unsupported file type", f"{path.name} (audio must be {'/'.join(AUDIO_SUFFIXES)})"
            )
        try:
            info = sf.info(str(path))
            # the declared length fills a buffer in place; an MP3's is an estimate, and a broken header's
            # could be anything (no codec packs more than a few dozen frames in a byte)
            declared = info.frames if info.format != "MP3" and info.frames <= 64 * path.stat().st_size else 0
            wave, rate = _read_mono(path, declared), info.samplerate
        except Exception as err:  # libsndfile's messages: "Format not recognised", ...
            raise SampleError("unreadable audio", f"{path.name}: {err}") from None
        sizes = _wav_declared_bytes(path) if path.suffix.lower() == ".wav" else None
        # 0xFFFFFFFF: a size a streaming writer (ffmpeg to a pipe) left unknown; libsndfile reads to the end
        if sizes and sizes[0] != 0xFFFFFFFF and sizes[1] < sizes[0]:
            raise SampleError("truncated audio", f"{path.name} holds {sizes[1]} of its {sizes[0]} data bytes")
        # an MP3's frame count is an estimate when it lacks a Xing/LAME header: no truncation test there
        if info.frames > 0 and len(wave) < info.frames and info.format != "MP3":
            raise SampleError(
                "truncated audio", f"{path.name} decodes {len(wave)} of its {info.frames} frames"
            )
        if len(wave) == 0:
            raise SampleError("empty audio", f"{path.name} has no samples")
        return check_finite(wave, where=path.name), rate

    def decode(self, path: Path) -> dict[str, np.ndarray]:
        import torchaudio

        wave, rate = self.read_wave(path)
        x = torch.from_numpy(wave)
        if rate != self.sample_rate:  # window by window: long recordings stay within bounded memory
            x = audio_windows.resample(x, rate, self.sample_rate)
        if self.features == "waveform":
            return {"data": x[:, None].contiguous().numpy()}
        mel = torchaudio.transforms.MelSpectrogram(
            center=False,  # audio_windows.logmel pads the signal as center=True would, once
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_min=self.f_min,
            f_max=self.f_max,
        )
        # a clip shorter than half a window (a click, 10 ms at 16 kHz) cannot be reflected at its
        # edges; it is zero-padded there instead, giving as many frames as the formula for any clip
        pad_mode = "reflect" if len(x) > self.n_fft // 2 else "constant"
        logmel = audio_windows.logmel(
            x, mel, self.n_fft, self.hop_length, pad_mode, sample_rate=self.sample_rate
        ).numpy()  # [T, n_mels]
        # frame centres in seconds, for modalities fused on a common clock
        times = (np.arange(len(logmel)) * self.hop_length / self.sample_rate).astype(np.float32)
        return {"data": logmel, "times": times}
