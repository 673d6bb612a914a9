"""Resampling and log-mel features of a long recording, one window at a time, with the same results as
over the whole signal at once.

Why: over a whole 10-minute 48 kHz clip, torchaudio's resampling alone took about 4.6x the signal's
memory (+527 MB over a 115 MB signal; +858 MB for the whole decode), and an hour would need gigabytes
per decoding process. Each window here carries enough of its neighbours' samples for every output
sample to see exactly what it sees over the whole signal, so results equal the whole-signal ones up
to float rounding (tests/data/test_audio_windows.py), and memory grows with the window, not the clip.
"""

from __future__ import annotations

import math

import torch

WINDOW_SECONDS = 30.0  # of output per window: small next to any clip worth windowing


def resample(x: torch.Tensor, orig: int, new: int, window_seconds: float = WINDOW_SECONDS) -> torch.Tensor:
    """torchaudio.functional.resample(x, orig, new) of a 1-D signal, computed window by window."""
    import torchaudio  # a second of import: only where audio is decoded

    g = math.gcd(orig, new)
    o, n = orig // g, new // g  # every o input samples give n output samples, in the same phase
    step = o * max(1, math.ceil(window_seconds * orig / o))  # input samples per window, a multiple of o
    if len(x) <= 2 * step:
        return torchaudio.functional.resample(x, orig, new)
    # torchaudio's sinc kernel reaches lowpass_filter_width (6) * o / (n * rolloff) input samples each
    # side; 64 periods of o (at least 64 samples) is far beyond that for any rate pair
    context = o * max(64, math.ceil(64 / o))
    total = math.ceil(n * len(x) / o)
    out = x.new_empty(total)
    for start in range(0, len(x), step):
        lo, hi = max(0, start - context), min(len(x), start + step + context)
        y = torchaudio.functional.resample(x[lo:hi], orig, new)
        first = (start - lo) // o * n  # output index of input sample `start`, within y
        begin = start // o * n
        end = min(total, (start + step) // o * n)
        out[begin:end] = y[first : first + end - begin]
    return out


def logmel(
    x: torch.Tensor, mel: torch.nn.Module, n_fft: int, hop: int, pad_mode: str,
    window_seconds: float = WINDOW_SECONDS, sample_rate: int = 16000,
) -> torch.Tensor:  # fmt: skip
    """log(mel(x) + 1e-6) as [T, n_mels] for a torchaudio MelSpectrogram `mel` built with center=False.
    The signal is padded as center=True pads it (n_fft // 2 each side, `pad_mode`), then cut into
    windows of whole hops that overlap by n_fft - hop samples: each frame sees what it sees in one pass."""
    padded = torch.nn.functional.pad(x[None, None], (n_fft // 2, n_fft // 2), mode=pad_mode)[0, 0]
    frames = 1 + (len(padded) - n_fft) // hop
    per_window = max(1, int(window_seconds * sample_rate) // hop)
    out = []
    for f0 in range(0, frames, per_window):
        f1 = min(frames, f0 + per_window)
        piece = padded[f0 * hop : (f1 - 1) * hop + n_fft]
        out.append(torch.log(mel(piece) + 1e-6).T)
    return torch.cat(out)
