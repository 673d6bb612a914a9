"""Padding never changes a prediction, for every fusion type; absent modalities neither crash nor
produce NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import get_object, instantiate
from model_testlib import ENCODERS, FUSIONS, SHAPES, build_model, compose_train

from gru_mm.data import kinds
from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.nn.encoders import Encoder

KIND_SHAPES = {
    "audio": (6,),
    "frames": (3, 8, 8),
    "text": (),
    "series": (4,),
}  # a per-step shape of each kind


def _model(*overrides: str):
    return build_model(*overrides).eval()


def _sample(rng, i, n_audio, n_video):
    return Sample(
        f"s{i}",
        i % 10,
        {
            "audio": rng.normal(size=(n_audio, 40)).astype(np.float32) if n_audio else None,
            "video": rng.random((n_video, 1, 8, 8)).astype(np.float32) if n_video else None,
        },
    )


def _assert_padding_invariant(model, lengths, seed=1):
    rng = np.random.default_rng(seed)
    samples = [_sample(rng, i, a, v) for i, (a, v) in enumerate(lengths)]
    collate = Collate(SHAPES)
    with torch.no_grad():
        together = model(collate(samples).inputs)
        for i, s in enumerate(samples):
            alone = model(collate([s]).inputs)
            torch.testing.assert_close(together[i], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gru", ["torch", "cho2014"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_prediction(gru, bidirectional):
    model = _model(f"model/gru={gru}", f"model.gru.bidirectional={str(bidirectional).lower()}")
    _assert_padding_invariant(model, [(1, 1), (7, 3), (60, 40), (13, 2), (100, 25)])


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize(("gru", "bidirectional"), [("torch", True), ("cho2014", False)])
def test_padding_never_changes_a_prediction_for_any_fusion(fusion, gru, bidirectional):
    """Including absent modalities (length 0) and a sample that lacks both."""
    model = _model(
        f"model/fusion={fusion}", f"model/gru={gru}", f"model.gru.bidirectional={str(bidirectional).lower()}"
    )
    _assert_padding_invariant(model, [(1, 1), (7, 3), (60, 40), (13, 0), (0, 25), (100, 25), (0, 0)])


def test_absent_modality_is_finite_and_independent_of_the_other_samples():
    model = _model()
    rng = np.random.default_rng(2)
    samples = [_sample(rng, 0, 0, 5), _sample(rng, 1, 30, 0), _sample(rng, 2, 20, 9)]
    collate = Collate(SHAPES)
    logits = model(collate(samples).inputs)
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        torch.testing.assert_close(logits[0], model(collate(samples[:1]).inputs)[0], rtol=1e-5, atol=1e-5)
    # gradients stay finite too (length-0 sequences must not leak NaN into training)
    model.train()
    model(collate(samples).inputs).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_model_picks_a_subset_of_modalities():
    model = _model("model.modalities=[video]")
    assert model.modalities == ["video"]
    assert set(model.encoders) == {"video"}
    with pytest.raises(Exception, match="smell"):
        _model("model.modalities=[smell]")


@pytest.mark.parametrize("gru", ["torch", "cho2014"])
def test_gates_are_per_step_and_independent_of_padding(gru):
    model = _model(f"model/gru={gru}", "model.gru.hidden_size=16")
    assert model.has_gates() and not _model("model/fusion=early").has_gates()  # one GRU over all modalities
    rng = np.random.default_rng(3)
    samples = [_sample(rng, 0, 60, 9), _sample(rng, 1, 7, 0), _sample(rng, 2, 20, 3)]
    collate = Collate(SHAPES)
    gates = model.gates(collate(samples).inputs)
    assert sorted(gates) == ["audio", "video"]
    for m, g in gates.items():
        lengths = g["lengths"]
        assert g["z"].shape[:2] == (1, 3) and g["z"].shape[-1] == 16 and g["r"].shape == g["z"].shape
        for i in range(3):
            n = int(lengths[i])
            z, r = g["z"][0, i], g["r"][0, i]
            assert ((z[:n] > 0) & (z[:n] < 1)).all() and ((r[:n] > 0) & (r[:n] < 1)).all()
            assert not z[n:].any() and not r[n:].any()  # zeros at padding
            # a sample alone (no padding) has the same gates
            alone = model.gates(collate([samples[i]]).inputs)[m]
            torch.testing.assert_close(alone["z"][0, 0, :n], z[:n], rtol=1e-5, atol=1e-6)
    assert int(gates["video"]["lengths"][1]) == 0  # sample 1 lacks video: no steps, nothing to show
    assert gates["audio"]["cell"] == gru  # what z means depends on it
    with pytest.raises(ValueError, match="a fusion that runs a GRU per modality"):
        _model("model/fusion=early").gates(collate(samples).inputs)


@pytest.mark.parametrize("name", ENCODERS)
def test_every_encoder_config_declares_its_sizes_and_stride_and_ignores_padding(name):
    """Each conf/model/encoder/*.yaml builds an Encoder whose size arguments a modality kind gives; its
    output lengths follow its declared time_stride, and a padded batch gives each sample what it gets
    alone."""
    cfg = compose_train(f"+model/encoder@model.encoders.probe={name}").model.encoders.probe
    cls = get_object(cfg._target_)
    assert issubclass(cls, Encoder) and cls.size_args, f"{cls.__name__} declares no size_args"
    assert set(cls.size_args) <= set(cfg.keys())  # each one is a key users see (null or ???: the data's)
    kind, shape = next(
        (k, s) for k, s in KIND_SHAPES.items() if set(cls.size_args) <= set(kinds.get(k).encoder_sizes(s, 20))
    )
    if getattr(cls, "data_settings", None):  # it reads its kind decoded its own way (raw waveform)
        shape = kinds.get(kind)(**cls.data_settings).step_shape()
    nothing_kept = {"cache_dir": None} if "cache_dir" in cfg else {}  # frozen features: none on disk
    torch.manual_seed(0)
    sizes = kinds.get(kind).encoder_sizes(shape, 20)  # a kind may give more than this encoder takes
    encoder = instantiate(cfg, **{k: sizes[k] for k in cls.size_args}, **nothing_kept).eval()
    lengths = torch.tensor([7, 3, 0])
    x = torch.randint(2, 20, (3, 7)) if kind == "text" else torch.rand(3, 7, *shape)  # padding holds junk too
    with torch.no_grad():
        y, out_lengths = encoder(x, lengths)
        stride = encoder.time_stride
        assert y.shape[-1] == encoder.out_features
        assert out_lengths.tolist() == [-(-n // stride) for n in lengths.tolist()]
        for i, n in enumerate(out_lengths.tolist()[:2]):
            alone, _ = encoder(x[i : i + 1, : int(lengths[i])], lengths[i : i + 1])
            torch.testing.assert_close(y[i, :n], alone[0, :n], rtol=1e-5, atol=1e-5)
            assert not y[i, n:].any()  # padded steps stay zero
