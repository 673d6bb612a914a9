"""Missing modalities: learned stand-ins in every fusion type, finite results, modality dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_testlib import FUSIONS, SHAPES, build_model

from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.models.multimodal import modality_dropout_mask, set_absent

_model = build_model


def _batch(lengths, seed=0):
    rng = np.random.default_rng(seed)
    samples = [
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
    return Collate(SHAPES)(samples)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_absent_modalities_give_finite_outputs_and_gradients_and_use_the_stand_in(fusion):
    model = _model(f"model/fusion={fusion}", "model.modality_dropout=0.0")
    # audio absent, video absent, both present, both absent; then a batch where no sample has audio
    for lengths in ([(0, 5), (30, 0), (20, 9), (0, 0)], [(0, 4), (0, 7)]):
        batch = _batch(lengths)
        model.zero_grad()
        logits = model(batch.inputs)
        assert torch.isfinite(logits).all()
        logits.sum().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert all(torch.isfinite(g).all() for g in grads.values())
        assert grads["absent.audio"].abs().sum() > 0, "the audio stand-in must receive gradient"
    # the stand-in is used: zeroing it changes the rows lacking a modality, and only those
    model.eval()
    batch = _batch([(0, 5), (30, 0), (20, 9)])
    with torch.no_grad():
        before = model(batch.inputs)
        for p in model.absent.values():
            p.zero_()
        after = model(batch.inputs)
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])
    torch.testing.assert_close(before[2], after[2])


def test_set_absent_empties_the_chosen_samples():
    batch = _batch([(3, 2), (5, 4)])
    seq = set_absent(batch.inputs["video"], torch.tensor([False, True]))
    assert seq.lengths.tolist() == [2, 0] and seq.present.tolist() == [True, False]
    assert (seq.data[1] == 0).all() and torch.equal(seq.data[0], batch.inputs["video"].data[0])


def test_modality_dropout_drops_at_about_the_rate_and_never_all():
    g = torch.Generator().manual_seed(0)
    present = torch.ones(20000, 3, dtype=torch.bool)
    present[:5000, 1:] = False  # samples with a single modality: never dropped
    drop = modality_dropout_mask(present, 0.3, g)
    assert not (drop & ~present).any(), "only present modalities can be dropped"
    assert (present & ~drop).any(dim=1).all(), "a sample always keeps one modality"
    assert not drop[:5000].any()
    rate = drop[5000:].float().mean().item()
    # 0.3 minus the rare all-dropped draws (0.3^3), where one modality is kept back
    assert rate == pytest.approx(0.3 - 0.3**3 / 3, abs=0.01)
    assert not modality_dropout_mask(present, 0.0, g).any()


def test_modality_dropout_runs_in_training_only():
    model = _model("model.modality_dropout=0.5", "model.head.dropout=0.0")
    batch = _batch([(20, 5)] * 32, seed=1)
    seen = []
    model.fusion.register_forward_hook(
        lambda mod, args, out: seen.append({m: x.lengths.clone() for m, x in args[0].items()})
    )
    model.train()
    torch.manual_seed(0)
    model(batch.inputs)
    lengths = seen[-1]
    dropped = {m: int((lengths[m] == 0).sum()) for m in lengths}
    assert 0 < dropped["audio"] < 32 and 0 < dropped["video"] < 32
    assert ((lengths["audio"] > 0) | (lengths["video"] > 0)).all()
    model.eval()
    model(batch.inputs)
    assert all((x > 0).all() for x in seen[-1].values())


def test_modality_dropout_out_of_range_names_the_key():
    with pytest.raises(Exception, match="model.modality_dropout"):
        _model("model.modality_dropout=1.0")
