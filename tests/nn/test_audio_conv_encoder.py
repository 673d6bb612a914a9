"""AudioConvEncoder's per-utterance normalisation (issue 11): statistics over real frames only."""

from __future__ import annotations

import pytest
import torch

from gru_mm.nn.encoders import AudioConvEncoder


def encoder(normalize: str) -> AudioConvEncoder:
    torch.manual_seed(0)
    return AudioConvEncoder(in_features=8, out_features=6, channels=5, normalize=normalize).eval()


@pytest.mark.parametrize("normalize", ["utterance", "frame"])
def test_padding_never_changes_a_clips_encoding(normalize):
    enc = encoder(normalize)
    short, long = torch.randn(1, 7, 8), torch.randn(1, 12, 8)
    alone, alone_len = enc(short, torch.tensor([7]))
    padded = torch.cat([torch.cat([short, torch.full((1, 5, 8), 1e3)], dim=1), long])
    batch, lengths = enc(padded, torch.tensor([7, 12]))
    assert lengths.tolist() == [4, 6] and alone_len.tolist() == [4]
    torch.testing.assert_close(batch[0, :4], alone[0], rtol=1e-5, atol=1e-5)
    assert batch[0, 4:].abs().max() == 0  # padded steps stay zero


def test_utterance_norm_removes_a_per_bin_offset_and_scale_the_frame_norm_keeps():
    # a microphone's response and gain shift and scale each log-mel bin for the whole clip
    x = torch.randn(1, 20, 8)
    offset, scale = torch.linspace(-3, 5, 8), torch.linspace(0.5, 2.0, 8)
    lengths = torch.tensor([20])
    for normalize, invariant in (("utterance", True), ("frame", False)):
        enc = encoder(normalize)
        same = torch.allclose(enc(x, lengths)[0], enc(x * scale + offset, lengths)[0], atol=1e-4)
        assert same is invariant, normalize


def test_utterance_norm_keeps_silence_quieter_than_speech():
    # noise-only frames around a loud middle: per frame, a LayerNorm makes every frame unit variance
    x = torch.randn(1, 30, 8) * 0.1
    x[0, 10:20] += 4.0 * torch.randn(10, 8).abs()
    mask = torch.ones(1, 30, 1)
    normed = encoder("utterance").norm(x, mask)
    assert normed[0, 10:20].abs().mean() > 2 * normed[0, :10].abs().mean()


def test_empty_clip_gives_zeros_not_nan():
    enc = encoder("utterance")
    out, lengths = enc(torch.randn(2, 6, 8), torch.tensor([0, 6]))
    assert torch.isfinite(out).all() and out[0].abs().max() == 0 and lengths.tolist() == [0, 3]


def test_unknown_normalize_is_refused_by_name():
    with pytest.raises(ValueError, match="normalize must be 'utterance' or 'frame', got 'global'"):
        AudioConvEncoder(in_features=8, normalize="global")
