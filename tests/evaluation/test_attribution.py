"""Gradient x input attributions: per encoded step and per modality, padding-independent, and zero
for a modality the model cannot see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.evaluation.attribution import GradientProfile, attributions
from models.model_testlib import FUSIONS, SHAPES, build_model


def _samples(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Sample(
            f"s{i}",
            i % 10,
            {
                "audio": rng.normal(size=(a, 40)).astype(np.float32) if a else None,
                "video": rng.random((v, 1, 8, 8)).astype(np.float32) if v else None,
            },
        )
        for i, (a, v) in enumerate(lengths)
    ]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_shares_sum_to_one_padding_gets_nothing_and_a_sample_alone_agrees(fusion):
    net = build_model(f"model/fusion={fusion}").eval()
    samples = _samples([(60, 9), (7, 0), (20, 3)])
    collate = Collate(SHAPES)
    result = attributions(net, collate(samples).inputs)
    shares = torch.stack([result[m]["share"] for m in ("audio", "video")], 1)
    torch.testing.assert_close(shares.sum(1), torch.ones(3))
    assert float(result["video"]["share"][1]) == 0.0  # sample 1 has no video
    for m in ("audio", "video"):
        steps, lengths = result[m]["steps"], result[m]["lengths"]
        for i in range(3):
            assert not steps[i, int(lengths[i]) :].any()  # padding
            alone = attributions(net, collate([samples[i]]).inputs)[m]
            n = int(lengths[i])
            torch.testing.assert_close(alone["steps"][0, :n], steps[i, :n], rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in net.parameters())  # nothing left in the model


def test_a_modality_the_model_cannot_see_gets_no_share():
    net = build_model("model/fusion=late").eval()
    with torch.no_grad():  # the video GRU ignores its input: video cannot change the prediction
        net.grus["video"].weight_ih_l0.zero_()
    result = attributions(net, Collate(SHAPES)(_samples([(30, 5), (12, 8)])).inputs)
    assert torch.equal(result["video"]["share"], torch.zeros(2))
    torch.testing.assert_close(result["audio"]["share"], torch.ones(2))


def test_frozen_text_embedding_is_still_attributed(tmp_path):
    from gru_mm.nn.encoders import TokenEmbeddingEncoder

    net = build_model().eval()
    frozen = TokenEmbeddingEncoder(10, out_features=net.encoders["audio"].out_features)
    frozen.embed.weight.requires_grad_(False)
    net.encoders["audio"] = frozen  # audio slot now reads token ids
    shapes = {"audio": (), "video": (1, 8, 8)}
    sample = Sample(
        "t",
        0,
        {
            "audio": np.array([3, 4, 5], dtype=np.int64),
            "video": np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32),
        },
    )
    result = attributions(net, Collate(shapes)([sample]).inputs)
    assert float(result["audio"]["share"][0]) > 0 and result["audio"]["steps"][0, :3].all()


def test_gradient_profile_aligns_samples_at_their_last_step():
    profile = GradientProfile()
    grad = torch.tensor([[1.0, 2.0, 4.0, 0.0], [3.0, 99.0, 99.0, 99.0], [0.0, 0.0, 0.0, 0.0]])
    profile.add(grad, torch.tensor([3, 1, 0]))  # sample 1's padding holds garbage; sample 2 is absent
    back, mean = profile.curve()
    assert back.tolist() == [0, 1, 2]
    np.testing.assert_allclose(mean, [1.0, 0.5, 0.25])  # last steps: (1 + 1) / 2; then sample 0 alone
    assert profile.start_vs_peak() == pytest.approx(0.25)  # only sample 0 has two steps or more
    profile.add(torch.tensor([[2.0, 2.0, 2.0, 2.0, 1.0]]), torch.tensor([5]))  # a longer batch later
    back, mean = profile.curve(min_samples=2)
    assert back.tolist() == [0, 1, 2]  # steps 3 and 4 back: one sample only
    np.testing.assert_allclose(mean, [(1 + 1 + 0.5) / 3, (0.5 + 1) / 2, (0.25 + 1) / 2])
    assert profile.start_vs_peak() == pytest.approx((0.25 + 1.0) / 2)


@pytest.mark.parametrize("z_bias, reaches", [(8.0, True), (-8.0, False)])
def test_the_gradient_reaches_early_steps_only_when_the_update_gate_keeps_the_state(z_bias, reaches):
    """torch's cell: z near 1 keeps the previous state, so the gradient reaches the first step nearly
    undiminished; z near 0 with a weak recurrence forgets, so the gradient vanishes within a few steps."""
    net = build_model("model/fusion=late").eval()
    gru = net.grus["audio"]
    with torch.no_grad():
        for name, p in gru.named_parameters():
            if name.startswith("bias_ih"):
                p[gru.hidden_size : 2 * gru.hidden_size] = z_bias
            elif name.startswith("bias_hh"):
                p[gru.hidden_size : 2 * gru.hidden_size] = 0.0
            elif name.startswith("weight_hh"):
                p.mul_(0.01)
    result = attributions(net, Collate(SHAPES)(_samples([(60, 4), (40, 6), (80, 5)])).inputs)
    profile = GradientProfile()
    profile.add(result["audio"]["grad"], result["audio"]["lengths"])
    ratio = profile.start_vs_peak()
    assert (ratio > 0.5) if reaches else (ratio < 1e-3), ratio
