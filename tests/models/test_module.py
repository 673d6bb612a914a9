"""The LightningModule adds the GRU's configured L2 penalty to the training loss, and only then."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_testlib import build_test_module as _module
from model_testlib import compose_train

from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate


def _batch():
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            str(i),
            i,
            {
                "audio": rng.normal(size=(20 + i, 40)).astype(np.float32),
                "video": rng.random((3 + i, 1, 8, 8)).astype(np.float32),
            },
        )
        for i in range(4)
    ]
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


def test_find_lr_restores_the_weights_and_forgets_its_steps(tmp_path):
    from gru_mm.models.build import build_datamodule, build_module
    from gru_mm.models.lr_find import find_lr

    # no dropout: the first loss of the test is the untrained model's loss on the first training batch
    cfg = compose_train(
        "debug=smoke",
        f"paths.data_dir={tmp_path / 'data'}",  # the smoke set is generated here, not in the repository
        f"paths.output_dir={tmp_path / 'out'}",  # the finder's trainer makes it (not the shared /tmp/x)
        "lr_find.enabled=true",
        "lr_find.steps=20",
        "model.head.dropout=0",
        "model.modality_dropout=0",
    )
    datamodule = build_datamodule(cfg)
    datamodule.validate()
    torch.manual_seed(0)
    module = build_module(cfg, datamodule=datamodule)
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():  # (in train mode, as the test's first step; BatchNorm statistics move)
        first_loss = float(module.loss_fn(module.outputs(batch), batch.target))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    curves = []
    lr = find_lr(cfg, module, datamodule, on_curve=curves.append)
    (curve,) = curves
    # the unbiased running mean starts at the first loss (Lightning's own starts near half of it)
    assert curve["loss"][0] == pytest.approx(first_loss, rel=1e-4)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert lr is not None and module.optimizer_factory.keywords["lr"] == lr
    assert module.configure_optimizers()["optimizer"].param_groups[0]["lr"] == lr
    assert module.stop_on_nonfinite_loss and module._real_steps == 0
    assert all(m.update_count == 0 for metrics in module.metrics.values() for m in metrics.values())


def test_the_suggestion_is_a_tenth_of_the_rate_at_the_lowest_loss():
    from gru_mm.models.lr_find import suggest

    lrs = [10.0 ** (k / 4 - 6) for k in range(24)]
    losses = [2.3] * 12 + [2.2, 2.0, 1.7, 1.5, 1.6, 2.5, 9.0, float("nan")] + [float("nan")] * 4
    assert suggest(lrs, losses) == pytest.approx(lrs[15] / 10)
    assert suggest(lrs, [0.1] + losses[1:]) == pytest.approx(lrs[15] / 10)  # the first 10 points are skipped
    assert suggest(lrs[:11], losses[:11]) is None  # one point after the skipped ones: nothing to go on
