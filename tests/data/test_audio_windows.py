"""Long recordings are resampled and turned into log-mel frames window by window (kinds.audio_windows):
the results equal one pass over the whole signal, and memory no longer grows with the clip."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from gru_mm.data.kinds import audio_windows
from gru_mm.data.kinds.audio import Audio


@pytest.mark.parametrize("orig", [48000, 44100, 22050, 11025, 8000, 96000])
def test_windowed_resampling_equals_one_pass(orig):
    gen = torch.Generator().manual_seed(orig)
    for n in (orig * 3 + 7, orig * 2 + 1, 100003):  # lengths that are no multiple of anything
        x = torch.randn(n, generator=gen) * 0.1
        whole = torchaudio.functional.resample(x, orig, 16000)
        windowed = audio_windows.resample(x, orig, 16000, window_seconds=0.3)  # 7-10 windows
        assert windowed.shape == whole.shape
        assert float((windowed - whole).abs().max()) < 1e-6


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_windowed_logmel_equals_one_pass(pad_mode):
    x = torch.randn(16000 * 3 + 123, generator=torch.Generator().manual_seed(0)) * 0.1
    kw = dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40)
    whole = torch.log(torchaudio.transforms.MelSpectrogram(**kw, pad_mode=pad_mode)(x) + 1e-6).T
    mel = torchaudio.transforms.MelSpectrogram(**kw, center=False)
    windowed = audio_windows.logmel(x, mel, 400, 160, pad_mode, window_seconds=0.37)
    assert windowed.shape == whole.shape == (1 + len(x) // 160, 40)
    assert float((windowed - whole).abs().max()) < 1e-5


def test_a_long_stereo_clip_decodes_as_in_one_pass(tmp_path):
    """70 s of 44.1 kHz stereo: three 30 s windows in the decoder, against mixdown, resampling and
    log-mel over the whole clip as the decoder did before."""
    rate = 44100
    t = np.arange(rate * 70) / rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.1 * t))
    right = 0.2 * np.sin(2 * np.pi * 1234 * t)
    path = tmp_path / "long.wav"
    sf.write(str(path), np.stack([left, right], 1).astype(np.float32), rate)
    got = Audio().decode(path)
    wave, _ = sf.read(str(path), dtype="float32", always_2d=True)
    x = torchaudio.functional.resample(torch.from_numpy(wave.mean(axis=1)), rate, 16000)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40)
    ref = torch.log(mel(x) + 1e-6).T.numpy()
    assert got["data"].shape == ref.shape == (7001, 40)
    np.testing.assert_allclose(got["data"], ref, atol=1e-4)
    assert got["times"][-1] == pytest.approx(70.0)


@pytest.mark.slow
def test_ten_minutes_of_48_khz_stereo_decode_in_bounded_memory(tmp_path):
    """Peak memory of decoding a 10-minute 48 kHz stereo clip, in a fresh process: 858 MB above the
    process's start before windowing (reading it whole, then resampling it whole), 237 MB with it."""
    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(str(path), "w", 48000, 2, subtype="PCM_16") as f:
        for minute in range(10):  # written a minute at a time: the test itself stays small too
            t = np.arange(48000 * 60) / 48000 + minute * 60
            f.write(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], 1) * 0.3)
    script = textwrap.dedent(
        f"""
        import resource, torch
        torch.set_num_threads(1)
        from gru_mm.data.kinds.audio import Audio
        audio = Audio()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = audio.decode(__import__("pathlib").Path({str(path)!r}))
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(out["data"].shape[0], round(grew))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    frames, grew_mb = map(int, done.stdout.split())
    assert frames == 60001
    assert grew_mb < 450, f"decoding grew the process by {grew_mb} MB"
