"""model.compile (issue 14): the encoders and the head run through torch.compile, the GRUs stay eager, the
state dict is the eager model's, and the results are the eager model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_testlib import SHAPES, build_model

from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate


def _compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_compile_switch_compiles_encoders_and_head_only_and_keeps_the_state_dict():
    eager = build_model("model.compile=false")
    compiled = build_model("model.compile=true")
    assert not any(_compiled(m) for m in eager.modules())
    assert all(_compiled(e) for e in compiled.encoders.values()) and _compiled(compiled.head)
    assert not any(_compiled(m) for g in compiled.grus.values() for m in g.modules())
    # checkpoints load across the switch: same keys (nn.Module.compile adds no `_orig_mod.` prefix)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())


def _batch(rng, batch_size, max_audio, max_video):
    samples = [
        Sample(
            f"s{i}",
            i % 10,
            {
                "audio": rng.normal(size=(int(rng.integers(1, max_audio)), 40)).astype(np.float32),
                "video": None if i == 1 else rng.random((int(rng.integers(1, max_video)), 1, 8, 8)),
            },
        )
        for i in range(batch_size)
    ]
    for s in samples:
        if s.modalities["video"] is not None:
            s.modalities["video"] = s.modalities["video"].astype(np.float32)
    return Collate(SHAPES)(samples)


@pytest.mark.slow
def test_compiled_model_gives_the_eager_results_and_gradients_over_changing_shapes():
    eager = build_model("model.compile=false", "model.modality_dropout=0").eval()
    compiled = build_model("model.compile=true", "model.modality_dropout=0").eval()
    compiled.load_state_dict(eager.state_dict())
    rng = np.random.default_rng(0)
    for shape in [(8, 30, 12), (8, 45, 9), (5, 20, 15)]:  # bucketed batches: every step another length
        batch = _batch(rng, *shape)
        outs = []
        for model in (eager, compiled):
            model.zero_grad()
            out = model(batch.inputs)
            out.square().sum().backward()
            outs.append(
                (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            )
        (out_e, grads_e), (out_c, grads_c) = outs
        torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
        assert grads_c.keys() == grads_e.keys()
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)
