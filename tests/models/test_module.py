"""The LightningModule adds the GRU's configured L2 penalty to the training loss, and only then."""

from __future__ import annotations

import numpy as np
import torch
from model_testlib import build_test_module as _module

from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate


def _batch():
    rng = np.random.default_rng(0)
    samples = [Sample(str(i), i, {"audio": rng.normal(size=(20 + i, 40)).astype(np.float32),
                                  "video": rng.random((3 + i, 1, 8, 8)).astype(np.float32)}) for i in range(4)]
    return Collate({"audio": (40,), "video": (1, 8, 8)})(samples)


def test_l2_penalty_enters_the_training_loss():
    plain, penalised = _module(), _module("model.gru.l2_recurrent_kernel=0.5")
    assert plain._regularization() is None
    penalty = penalised._regularization()
    expected = sum(0.5 * p.pow(2).sum() for n, p in penalised.net.named_parameters() if "weight_hh" in n)
    torch.testing.assert_close(penalty, expected)
    batch = _batch()
    for m in (plain, penalised):
        m.eval()  # no dropout: the two losses differ only by the penalty
        m.log = lambda *a, **k: None
    loss_plain = plain._step(batch, "train")
    loss_pen = penalised._step(batch, "train")
    torch.testing.assert_close(loss_pen - loss_plain, penalty, rtol=1e-4, atol=1e-5)
