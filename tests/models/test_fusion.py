"""Fusion modules: what each consumes, exact maths against a direct computation, event ordering, configs."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from model_testlib import FUSIONS

from gru_mm.config import register_resolvers
from gru_mm.data.batch import Seq
from gru_mm.models.multimodal import fusion_consumes
from gru_mm.nn import GRU
from gru_mm.nn.fusion import AttentionFusion, FusionInput, LateFusion, LowRankFusion, TensorFusion
from gru_mm.nn.fusion_steps import EarlyFusion, EventFusion, fill_absent, resample
from gru_mm.paths import CONF_DIR

register_resolvers()


def _cfg(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/x", *overrides])


def _states(dims: dict[str, int], B: int = 3, T: int = 5, lengths=None) -> dict[str, FusionInput]:  # noqa: N803
    torch.manual_seed(0)
    lengths = torch.tensor(lengths or [T] * B)
    out = {}
    for m, d in dims.items():
        steps = torch.randn(B, T, d) * (torch.arange(T)[None, :, None] < lengths[:, None, None])
        out[m] = FusionInput(steps, lengths, lengths > 0, torch.randn(d), state=torch.randn(B, d))
    return out


def test_fusions_are_found_in_conf():
    assert {"late", "attention", "tensor", "lmf", "early", "event"} <= set(FUSIONS) and FUSIONS[0] == "late"


@pytest.mark.parametrize("name", FUSIONS)
def test_each_fusion_config_builds_and_declares_what_it_consumes(name):
    cfg = _cfg(f"model/fusion={name}")
    model = instantiate(cfg.model, num_classes=10)
    consumes = fusion_consumes(instantiate(cfg.model.fusion))
    assert consumes == model.consumes and consumes in ("states", "steps")
    # "steps" fusions bring their own GRU, so the model has no per-modality GRUs
    assert (len(model.grus) == 0) == (consumes == "steps")
    assert set(model.absent) == {"audio", "video"}
    assert model.head[0].normalized_shape[0] == model.fusion.out_features


@pytest.mark.parametrize("name", ["early", "event"])
def test_the_fusion_gru_follows_the_model_gru_group(name):
    model = instantiate(
        _cfg(
            f"model/fusion={name}",
            "model/gru=cho2014",
            "model.gru.hidden_size=24",
            "model.gru.bidirectional=true",
        ).model,
        num_classes=10,
    )
    gru = model.fusion.gru
    assert isinstance(gru, GRU) and gru.cell == "cho2014" and gru.hidden_size == 24
    assert model.fusion.out_features == 48 == model.head[0].normalized_shape[0]


def test_fusion_consumes_unwraps_partials():
    assert fusion_consumes(functools.partial(EventFusion, dim=8)) == "steps"
    assert fusion_consumes(functools.partial(EarlyFusion)) == "steps"
    assert (
        fusion_consumes(LateFusion)
        == fusion_consumes(AttentionFusion)
        == fusion_consumes(TensorFusion)
        == "states"
    )
    assert fusion_consumes(LowRankFusion) == "states"


def test_late_concatenates_states_in_sorted_order():
    x = _states({"b": 3, "a": 2})
    out = LateFusion({"b": 3, "a": 2})(x)
    torch.testing.assert_close(out, torch.cat([x["a"].state, x["b"].state], -1))


def test_attention_pools_real_steps_only_and_weights_sum_to_one():
    x = _states({"a": 4}, B=3, T=6, lengths=[6, 2, 0])
    fusion = AttentionFusion({"a": 4}, dim=8)
    pooled, w = fusion.pool("a", x["a"])
    assert (w[1, 2:] == 0).all() and (w[2] == 0).all()
    torch.testing.assert_close(w[:2].sum(1), torch.ones(2))
    torch.testing.assert_close(pooled[1], (w[1, :2, None] * x["a"].steps[1, :2]).sum(0))
    # a sample lacking the modality uses the stand-in: changing the stand-in changes only that row
    before = fusion(x)
    x["a"].absent = x["a"].absent + 1.0
    after = fusion(x)
    torch.testing.assert_close(before[:2], after[:2])
    assert not torch.allclose(before[2], after[2])


def test_tensor_fusion_is_the_outer_product_of_one_padded_states():
    x = _states({"a": 2, "b": 3})
    out = TensorFusion({"a": 2, "b": 3}, dim=None)(x)
    one = torch.ones(3, 1)
    a1, b1 = torch.cat([one, x["a"].state], 1), torch.cat([one, x["b"].state], 1)
    torch.testing.assert_close(out, torch.einsum("bi,bj->bij", a1, b1).flatten(1))
    assert TensorFusion({"a": 2, "b": 3}, dim=4).out_features == 25


def test_low_rank_fusion_equals_tensor_fusion_with_the_reconstructed_weight():
    dims = {"a": 2, "b": 3}
    x = _states(dims)
    lmf = LowRankFusion(dims, dim=5, rank=3)
    # W[i, j, o] = sum_r w_r A_r[i, o] B_r[j, o], with [h, 1] ordering (the 1 last)
    weight = torch.einsum("r,rio,rjo->ijo", lmf.rank_weights[0], lmf.factors["a"], lmf.factors["b"])
    one = torch.ones(3, 1)
    a1, b1 = torch.cat([x["a"].state, one], 1), torch.cat([x["b"].state, one], 1)
    expected = torch.einsum("bi,bj,ijo->bo", a1, b1, weight) + lmf.bias
    torch.testing.assert_close(lmf(x), expected, rtol=1e-5, atol=1e-5)


def test_resample_interpolates_each_row_onto_its_own_timeline():
    steps = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0, 0]])[..., None]
    lengths, target = torch.tensor([4, 1, 2]), torch.tensor([4, 3, 4])
    out = resample(steps, lengths, target, 4)[..., 0]
    torch.testing.assert_close(out[0], steps[0, :, 0])  # same length: unchanged
    torch.testing.assert_close(out[1], torch.tensor([5.0, 5.0, 5.0, 0.0]))  # one step: held, zeros after
    torch.testing.assert_close(out[2], torch.tensor([0.0, 0.5, 1.5, 2.0]))  # stretched 2 -> 4 cells


def test_fill_absent_gives_one_stand_in_step():
    x = FusionInput(
        torch.zeros(2, 0, 3), torch.tensor([0, 0]), torch.tensor([False, False]), torch.arange(3.0)
    )
    steps, lengths, _ = fill_absent(x)
    assert steps.shape == (2, 1, 3) and lengths.tolist() == [1, 1]
    torch.testing.assert_close(steps[:, 0], torch.arange(3.0).expand(2, 3))


def _steps_input(lengths, dim, times=None, seed=0):
    torch.manual_seed(seed)
    lengths = torch.tensor(lengths)
    T = int(lengths.max())  # noqa: N806
    steps = torch.randn(len(lengths), T, dim) * (torch.arange(T)[None, :, None] < lengths[:, None, None])
    return FusionInput(steps, lengths, lengths > 0, torch.randn(dim), times=times)


def test_event_fusion_orders_events_by_time():
    """Given times that interleave the two modalities, the GRU sees one merged, time-ordered sequence."""
    torch.manual_seed(0)
    fusion = EventFusion(
        {"a": 2, "b": 2}, functools.partial(GRU, hidden_size=4), dim=3, step_seconds={"a": 0.1, "b": 0.25}
    )
    seen = {}
    fusion.gru.register_forward_hook(lambda mod, args, out: seen.update(x=args[0], lengths=args[1]))
    x = {"a": _steps_input([3], 2), "b": _steps_input([2], 2, seed=1)}
    fusion(x)
    assert seen["lengths"].tolist() == [5]
    # times a: 0, .1, .2; b: 0, .25 -> order a0 b0 a1 a2 b1 (ties keep modality order); gaps as features
    gaps = seen["x"][0, :, -2]
    torch.testing.assert_close(gaps, torch.tensor([0.0, 0.0, 0.1, 0.1, 0.05]))
    proj_a = fusion.proj["a"](x["a"].steps[0]) + fusion.modality_embedding[0]
    proj_b = fusion.proj["b"](x["b"].steps[0]) + fusion.modality_embedding[1]
    expected = torch.stack([proj_a[0], proj_b[0], proj_a[1], proj_a[2], proj_b[1]])
    torch.testing.assert_close(seen["x"][0, :, :3], expected)
    # explicit times equal to index x step_seconds give the same result
    timed = {
        "a": _steps_input([3], 2, times=torch.tensor([[0.0, 0.1, 0.2]])),
        "b": _steps_input([2], 2, times=torch.tensor([[0.0, 0.25]]), seed=1),
    }
    torch.testing.assert_close(fusion(timed), fusion(x))


def test_event_fusion_without_times_needs_step_seconds():
    fusion = EventFusion({"a": 2}, functools.partial(GRU, hidden_size=4), dim=3, step_seconds={})
    with pytest.raises(ValueError, match="step_seconds"):
        fusion({"a": _steps_input([3], 2)})


def test_event_fusion_follows_seq_times_through_a_strided_encoder():
    model = instantiate(_cfg("model/fusion=event", "model.modalities=[audio]").model, num_classes=10).eval()
    T = 10  # noqa: N806
    seq = Seq(torch.randn(1, T, 40), torch.tensor([T]), torch.tensor([True]))
    with_times = Seq(
        seq.data, seq.lengths, seq.present, times=torch.arange(T, dtype=torch.float32)[None] * 0.016
    )
    with torch.no_grad():
        # the configured 32 ms per encoded step equals 16 ms frames under the encoder's stride 2
        torch.testing.assert_close(model({"audio": seq}), model({"audio": with_times}))
        slower = Seq(seq.data, seq.lengths, seq.present, times=with_times.times * 3)
        assert not torch.allclose(model({"audio": seq}), model({"audio": slower}))


def test_early_fusion_timeline_is_the_longest_present_modality():
    fusion = EarlyFusion({"a": 2, "b": 3}, functools.partial(GRU, hidden_size=4))
    seen = {}
    fusion.gru.register_forward_hook(lambda mod, args, out: seen.update(x=args[0], lengths=args[1]))
    fusion({"a": _steps_input([4, 0, 2], 2), "b": _steps_input([2, 3, 0], 3)})
    assert seen["lengths"].tolist() == [4, 3, 2]
    assert seen["x"].shape[-1] == 5
    fixed = EarlyFusion({"a": 2, "b": 3}, functools.partial(GRU, hidden_size=4), num_steps=6)
    fixed.gru.register_forward_hook(lambda mod, args, out: seen.update(lengths=args[1]))
    fixed({"a": _steps_input([4, 0, 2], 2), "b": _steps_input([2, 3, 0], 3)})
    assert seen["lengths"].tolist() == [6, 6, 6]
