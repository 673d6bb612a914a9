"""The series and text encoders: padding never changes a result, convolutions keep step t at step t, and
token dropout leaves out whole tokens in training only (issue 11)."""

from __future__ import annotations

import pytest
import torch

from gru_mm.nn.encoders import SeriesConvEncoder, TokenEmbeddingEncoder


def _padded(seqs: list[torch.Tensor], junk: float = 7.0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.full((len(seqs), int(lengths.max()), seqs[0].shape[1]), junk)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    return x, lengths


@pytest.mark.parametrize(
    "settings",
    [
        {"running_mean": True, "step_path": False},
        {"running_mean": False, "step_path": True},
        {"running_mean": True, "step_path": False, "local_path": False},
    ],
    ids=["series_conv.yaml", "constructor-defaults", "running-mean-only"],
)
def test_series_conv_padded_batch_gives_each_sample_what_it_gets_alone(settings):
    torch.manual_seed(0)
    enc = SeriesConvEncoder(3, out_features=8, channels=4, **settings).eval()
    seqs = [torch.randn(n, 3) for n in (1, 2, 7, 20, 0)]  # shorter and longer than the widest kernel
    x, lengths = _padded(seqs)  # padding holds junk, not zeros
    with torch.no_grad():
        y, out_lengths = enc(x, lengths)
        assert out_lengths.tolist() == lengths.tolist()
        for i, s in enumerate(seqs):
            n = len(s)
            assert not y[i, n:].any()  # padded steps stay zero
            if n:
                alone, _ = enc(s[None], torch.tensor([n]))
                torch.testing.assert_close(y[i, :n], alone[0], rtol=1e-5, atol=1e-6)


def test_series_conv_sees_exactly_its_receptive_field_around_each_step():
    """Widths 3, 9, 15 then a width-3 layer: step t sees steps t-8 .. t+8, no more (step t stays t).
    Without centering: the series' mean, which centering subtracts, depends on every step."""
    torch.manual_seed(0)
    enc = SeriesConvEncoder(
        2, out_features=8, channels=4, kernel_sizes=(3, 9, 15), layers=2, center=False, running_mean=False
    ).eval()
    x = torch.randn(1, 40, 2)
    lengths = torch.tensor([40])
    t = 20
    with torch.no_grad():
        base, _ = enc(x, lengths)
        for offset, seen in ((8, True), (-8, True), (9, False), (-9, False)):
            moved = x.clone()
            moved[0, t + offset] += 5.0
            changed = not torch.equal(enc(moved, lengths)[0][0, t], base[0, t])
            assert changed == seen, f"step {t} {'should' if seen else 'should not'} see step {t + offset}"


def test_series_conv_running_mean_sees_every_earlier_step_and_no_later_one_beyond_the_filters():
    """With the running mean, step t depends on steps 0 .. t+8 (the filters reach 8 steps ahead), not on
    t+9; its mean over steps 0..t makes step t's output that of the whole prefix."""
    torch.manual_seed(0)
    enc = SeriesConvEncoder(2, out_features=8, channels=4, center=False, running_mean=True, step_path=False)
    enc.eval()
    x = torch.randn(1, 40, 2)
    lengths = torch.tensor([40])
    t = 20
    with torch.no_grad():
        base, _ = enc(x, lengths)
        for offset, seen in ((-20, True), (-9, True), (8, True), (9, False), (19, False)):
            moved = x.clone()
            moved[0, t + offset] += 5.0
            changed = not torch.equal(enc(moved, lengths)[0][0, t], base[0, t])
            assert changed == seen, f"step {t} {'should' if seen else 'should not'} see step {t + offset}"


def test_series_conv_config_builds_the_running_mean_without_the_raw_step_path():
    """conf/model/encoder/series_conv.yaml (the default for series) turns on what the constructor's
    defaults leave off for old checkpoints."""
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = Path(__file__).parents[2] / "conf/model/encoder/series_conv.yaml"
    enc = instantiate(OmegaConf.load(config), in_features=3)
    assert isinstance(enc, SeriesConvEncoder)
    assert enc.summary is not None and enc.step is None


def test_series_conv_takes_a_batch_without_the_modality_and_rejects_bad_settings():
    enc = SeriesConvEncoder(3, out_features=8, running_mean=True)
    y, lengths = enc(torch.zeros(4, 0, 3), torch.zeros(4, dtype=torch.int64))
    assert y.shape == (4, 0, 8) and lengths.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="kernel_sizes must be odd"):
        SeriesConvEncoder(3, kernel_sizes=(3, 4))
    with pytest.raises(ValueError, match="all off"):
        SeriesConvEncoder(3, running_mean=False, step_path=False, local_path=False)


def test_token_dropout_leaves_out_whole_tokens_in_training_only():
    torch.manual_seed(0)
    enc = TokenEmbeddingEncoder(50, out_features=16, dropout=0.0, token_dropout=0.3)
    ids = torch.randint(2, 50, (64, 30))
    lengths = torch.randint(1, 31, (64,))
    real = torch.arange(30)[None] < lengths[:, None]
    enc.train()
    y, _ = enc(ids, lengths)
    zeroed = (y == 0).all(-1)
    assert ((y != 0).all(-1) | zeroed).all()  # a token is kept whole or left out whole
    assert zeroed[~real].all()  # padding stays zero
    left_out = zeroed[real].float().mean().item()
    assert 0.25 < left_out < 0.35, left_out  # about token_dropout of the real tokens
    enc.eval()
    y1, _ = enc(ids, lengths)
    assert not (y1 == 0).all(-1)[real].any()  # evaluation keeps every token
    torch.testing.assert_close(y1, enc(ids, lengths)[0])


def test_embedding_rows_start_small_and_padding_row_at_zero():
    torch.manual_seed(0)
    enc = TokenEmbeddingEncoder(2000, out_features=64, init_std=0.1)
    weight = enc.embed.weight.detach()
    assert not weight[0].any()
    assert 0.09 < weight[1:].std().item() < 0.11
    with pytest.raises(ValueError, match="token_dropout must lie in"):
        TokenEmbeddingEncoder(10, token_dropout=1.0)
