"""The two balancing remedies (gru_mm.models.balance): per-modality heads with their own losses, and OGM-GE
gradient modulation, on constructed batches; and the verdicts of the not-learning check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gru_mm.config import ConfigError
from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.evaluation.modality_check import chance_score, learn_margin, modality_warnings
from gru_mm.models.balance import GradientModulation, modality_representation
from gru_mm.nn.fusion import FusionInput
from models.model_testlib import SHAPES, build_test_module

# no dropout anywhere: the same batch gives the same forward pass twice
DETERMINISTIC = ("model.modality_dropout=0", "model.head.dropout=0")


def constructed_batch(n: int = 8, seed: int = 0):
    return Collate(SHAPES)(constructed_samples(n, seed))


def constructed_samples(n: int = 8, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = [
        Sample(
            f"s{i}",
            i % 10,
            {
                "audio": rng.normal(size=(int(rng.integers(1, 30)), 40)).astype(np.float32),
                "video": rng.random((int(rng.integers(1, 9)), 1, 8, 8)).astype(np.float32),
            },
        )
        for i in range(n)
    ]
    samples[0].modalities["audio"] = None  # one sample lacks audio: its own head must leave it out
    return samples


def grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


def model_params(module):
    """The fused model's parameters: everything but the per-modality heads."""
    return [p for n, p in module.net.named_parameters() if not n.startswith("unimodal.")]


def test_probes_learn_without_changing_the_models_gradient():
    module = build_test_module(*DETERMINISTIC)  # unimodal_heads.weight=0: the default
    batch = constructed_batch()
    module.training_step(batch, 0).backward()
    with_probes = grads(model_params(module))
    assert all(p.grad.abs().sum() > 0 for p in module.net.unimodal.parameters())  # the probes learn
    module.zero_grad()
    torch.nn.functional.cross_entropy(module.net(batch.inputs), batch.target).backward()
    for a, b in zip(with_probes, grads(model_params(module)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_auxiliary_losses_are_part_of_the_training_loss_and_gradient():
    weight = 0.7
    module = build_test_module(
        *DETERMINISTIC, f"model.unimodal_heads.weight={weight}", "+model.unimodal_heads.weights.video=2.0"
    )
    batch = constructed_batch()
    loss = module.training_step(batch, 0)
    # recomputed by hand: fused cross-entropy + weight x multiplier x each head's over the samples with it
    parts = module.net.forward_parts(batch.inputs)
    fused = torch.nn.functional.cross_entropy(parts.logits, batch.target)
    expected = fused
    for m, multiplier in {"audio": 1.0, "video": 2.0}.items():
        keep = batch.inputs[m].lengths > 0
        assert keep.sum() == (7 if m == "audio" else 8)
        own = torch.nn.functional.cross_entropy(parts.unimodal[m][keep], batch.target[keep])
        expected = expected + weight * multiplier * own
    torch.testing.assert_close(loss, expected)
    loss.backward()
    with_aux = grads(module.net.encoders["audio"].parameters())
    module.zero_grad()
    fused.backward()  # the fused loss alone reaches the encoder differently
    assert not all(
        torch.equal(a, b)
        for a, b in zip(with_aux, grads(module.net.encoders["audio"].parameters()), strict=True)
    )


def test_steps_fusions_read_the_mean_of_real_encoded_steps():
    steps = torch.randn(2, 5, 3)
    lengths = torch.tensor([2, 5])
    rep = modality_representation(
        FusionInput(steps, lengths, torch.ones(2, dtype=torch.bool), torch.zeros(3))
    )
    torch.testing.assert_close(rep, torch.stack([steps[0, :2].mean(0), steps[1].mean(0)]))
    padded = steps.clone()
    padded[0, 2:] = 1e6  # padding never counts
    again = modality_representation(
        FusionInput(padded, lengths, torch.ones(2, dtype=torch.bool), torch.zeros(3))
    )
    torch.testing.assert_close(again, rep)
    module = build_test_module("model/fusion=early", "model.unimodal_heads.weight=1")
    module.training_step(constructed_batch(), 0).backward()  # early fusion trains its heads too
    assert all(p.grad is not None for p in module.net.encoders.parameters())


def test_mean_readout_averages_gru_outputs_over_real_steps_and_absent_rows_read_the_stand_in():
    steps = torch.randn(3, 5, 4)
    lengths = torch.tensor([2, 5, 0])
    present = torch.tensor([True, True, False])
    absent = torch.full((4,), 7.0)
    state = torch.randn(3, 4)

    def read(x_steps, readout):
        return modality_representation(FusionInput(x_steps, lengths, present, absent, state=state), readout)

    assert torch.equal(read(steps, "state"), state)
    expected = torch.stack([steps[0, :2].mean(0), steps[1].mean(0), absent])
    torch.testing.assert_close(read(steps, "mean"), expected)
    padded = steps.clone()
    padded[0, 2:] = 1e6  # padding never counts
    padded[2] = -1e6  # nor do the steps of a sample that lacks the modality
    torch.testing.assert_close(read(padded, "mean"), expected)
    with pytest.raises(ConfigError, match="model.unimodal_heads.readout must be one of state, mean"):
        build_test_module("model.unimodal_heads.readout=last")


@pytest.mark.parametrize("fusion", ["attention", "late"])
def test_mean_readout_heads_are_padding_invariant_and_train_the_gru(fusion):
    readout = ("model.unimodal_heads.weight=1", "model.unimodal_heads.readout=mean")
    module = build_test_module(*DETERMINISTIC, f"model/fusion={fusion}", *readout)
    module.eval()  # no dropout
    samples = constructed_samples()
    batch = Collate(SHAPES)(samples)
    rng = np.random.default_rng(1)
    long = Sample("long", 3, {"audio": rng.normal(size=(60, 40)), "video": rng.random((12, 1, 8, 8))})
    longer = Collate(SHAPES)([*samples, long])  # the same 8 samples, padded to 60 / 12 steps
    assert longer.inputs["audio"].data.shape[1] == 60 > batch.inputs["audio"].data.shape[1]
    with torch.no_grad():
        alone, padded = module.net.forward_parts(batch.inputs), module.net.forward_parts(longer.inputs)
    for m in ("audio", "video"):
        torch.testing.assert_close(alone.unimodal[m], padded.unimodal[m][:8], rtol=1e-5, atol=1e-5)
    module.train()
    module.zero_grad()
    parts = module.net.forward_parts(batch.inputs)
    keep = batch.inputs["audio"].lengths > 0
    torch.nn.functional.cross_entropy(parts.unimodal["audio"][keep], batch.target[keep]).backward()
    # the audio head's loss reaches the audio GRU and encoder, and nothing of the video side
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.grus["audio"].parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.net.grus["video"].parameters())


def test_ogm_ge_coefficient_damps_only_the_dominant_modality():
    ogm = GradientModulation(alpha=0.5, noise=False)
    assert ogm.coefficients({"audio": 0.6, "video": 0.3}) == {"audio": 1 - math.tanh(0.5), "video": 1.0}
    assert ogm.coefficients({"audio": 0.4, "video": 0.4}) == {
        "audio": 1.0,
        "video": 1.0,
    }  # balanced: untouched
    three = ogm.coefficients({"a": 0.9, "b": 0.3, "c": 0.3})  # a against the mean of the others: ratio 3
    assert three == {"a": 1 - math.tanh(0.5 * 2), "b": 1.0, "c": 1.0}
    assert ogm.coefficients({"audio": 0.9}) == {"audio": 1.0}  # one modality alone is never damped


def test_ogm_ge_scales_the_dominant_modalitys_gradient_exactly():
    alpha = 20.0
    module = build_test_module(
        *DETERMINISTIC, "model.ogm_ge.enabled=true", f"model.ogm_ge.alpha={alpha}", "model.ogm_ge.noise=false"
    )
    net = module.net
    batch = constructed_batch()
    module.training_step(batch, 0).backward()
    before = {m: grads(p) for m, p in net.modality_parameters().items()}
    others_before = grads(net.head.parameters())
    # the scores by hand: the fused head's true-class probability with the other modality absent, over the
    # samples that have the modality, and the paper's ratio
    with torch.no_grad():
        parts = net.forward_parts(batch.inputs)
        score = {}
        for m in net.modalities:
            probs = net.logits_with_only(parts.fused, m).softmax(-1)
            keep = batch.inputs[m].lengths > 0
            score[m] = float(probs[torch.arange(8), batch.target][keep].mean())
    dominant, other = sorted(score, key=score.get, reverse=True)
    k = 1 - math.tanh(alpha * (score[dominant] / score[other] - 1))
    assert 0 < k < 1
    module.on_after_backward()
    for m, expected_k in {dominant: k, other: 1.0}.items():
        for g0, p in zip(before[m], net.modality_parameters()[m], strict=True):
            # rtol 1e-5: the module sums the float32 scores in another order than the mean above, and
            # alpha=20 magnifies that float32 rounding in k (1.2e-6 apart with the audio encoder's CMVN)
            torch.testing.assert_close(p.grad, g0 * expected_k, rtol=1e-5, atol=0)
    for g0, p in zip(others_before, net.head.parameters(), strict=True):
        assert torch.equal(p.grad, g0)  # fusion and head: never modulated


def test_ogm_ge_noise_has_each_gradients_spread_and_is_seeded():
    ogm = GradientModulation(alpha=1.0, noise=True)
    grad = torch.randn(200, 300) * 0.01
    results = []
    for _ in range(2):
        p = torch.nn.Parameter(torch.zeros(200, 300))
        p.grad = grad.clone()
        ogm.modulate({"audio": [p]}, {"audio": 0.25}, torch.Generator().manual_seed(7))
        results.append(p.grad)
    assert torch.equal(results[0], results[1])  # same seed and step: the same noise in every process
    noise = results[0] - 0.25 * grad
    assert noise.std() == pytest.approx(float(grad.std()), rel=0.02)
    assert abs(float(noise.mean())) < 0.001


def test_ogm_ge_where_it_cannot_apply_is_refused():
    with pytest.raises(ValueError, match="ogm_ge needs a fusion with a GRU per modality"):
        build_test_module("model/fusion=early", "model.ogm_ge.enabled=true")
    with pytest.raises(ValueError, match="model.ogm_ge.score must be one of fused, heads"):
        build_test_module("model.ogm_ge.enabled=true", "model.ogm_ge.score=loss")
    from gru_mm.models.module import SequenceClassifier

    net = build_test_module("model.ogm_ge.enabled=true").net
    with pytest.raises(ConfigError, match="this task is regression"):
        SequenceClassifier(net, num_classes=1, optimizer=torch.optim.SGD, task="regression")


def test_unimodal_head_weights_must_name_the_models_modalities():
    with pytest.raises(ValueError, match=r"weights names \['text'\], which the model lacks"):
        build_test_module("+model.unimodal_heads.weights.text=1.0")


def test_a_checkpoint_from_before_the_heads_still_loads():
    module = build_test_module()
    old = {k: v for k, v in module.state_dict().items() if ".unimodal." not in k}
    fresh = build_test_module()
    heads = {k: v.clone() for k, v in fresh.state_dict().items() if ".unimodal." in k}
    with torch.no_grad():
        fresh.net.head[1].weight.zero_()
    fresh.load_state_dict(old)  # strict: the heads keep their fresh weights
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in heads.items())
    torch.testing.assert_close(fresh.net.head[1].weight, module.net.head[1].weight)


def test_chance_and_the_learning_margin():
    assert chance_score("multiclass", torch.tensor([0, 0, 0, 1, 2, 3])) == pytest.approx(0.5)
    assert chance_score("binary", torch.tensor([1.0, 1.0, 1.0, 0.0])) == pytest.approx(0.75)
    assert chance_score("regression", torch.tensor([0.5, -1.0, 2.0, 0.0])) == pytest.approx(0.75)
    assert learn_margin(0.1, 10_000) == 0.05
    assert learn_margin(0.5, 100) == pytest.approx(0.15)  # three standard errors on a small split


def test_warnings_name_the_modality_at_chance_and_the_ignored_one():
    ablation = {
        "test_ablation/none/acc": 0.90,
        "test_ablation/audio/acc": 0.60,
        "test_ablation/video/acc": 0.895,
        "test_ablation/text/acc": 0.50,
    }
    own = {
        "audio": {"acc": 0.80, "n": 1000},
        "video": {"acc": 0.70, "n": 1000},
        "text": {"acc": 0.12, "n": 1000},
    }
    warnings = modality_warnings("multiclass", ablation, own, chance=0.1, n=1000)
    assert set(warnings) == {"video", "text"}
    assert "video contributes nothing to the fused model" in warnings["video"]
    assert "-0.005" in warnings["video"]
    assert "text does not learn" in warnings["text"] and "0.120" in warnings["text"]
    healthy = {"audio": {"acc": 0.80, "n": 1000}, "video": {"acc": 0.70, "n": 1000}}
    ablation["test_ablation/video/acc"] = 0.80
    assert modality_warnings("multiclass", ablation, healthy, chance=0.1, n=1000) == {}
