"""Gradient x input attributions: per encoded step and per modality, padding-independent, and zero
for a modality the model cannot see."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_testlib import FUSIONS, SHAPES, build_model

from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.models.attribution import attributions


def _samples(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [Sample(f"s{i}", i % 10, {
        "audio": rng.normal(size=(a, 40)).astype(np.float32) if a else None,
        "video": rng.random((v, 1, 8, 8)).astype(np.float32) if v else None,
    }) for i, (a, v) in enumerate(lengths)]


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
            assert not steps[i, int(lengths[i]):].any()  # padding
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
    sample = Sample("t", 0, {"audio": np.array([3, 4, 5], dtype=np.int64),
                             "video": np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)})
    result = attributions(net, Collate(shapes)([sample]).inputs)
    assert float(result["audio"]["share"][0]) > 0 and result["audio"]["steps"][0, :3].all()
