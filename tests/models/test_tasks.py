"""Each task gets its loss, metrics and outputs; sizes reach the model from the data; monitors are checked."""

from __future__ import annotations

import re

import pytest
import torch
from hydra import compose, initialize_config_dir

from data.byod_files import make_corpus  # tests/data's file writers (tests/ is on sys.path)
from gru_mm.config import ConfigError, register_resolvers
from gru_mm.models.build import build_datamodule, build_module, check_monitors
from gru_mm.models.module import SignAccuracy, TaskMetrics
from gru_mm.paths import CONF_DIR

register_resolvers()
SERIES = "+model/encoder@model.encoders.series=series_linear"
TEXT = "+model/encoder@model.encoders.text=text_embedding"


def _setup(tmp_path, task, *overrides, modalities=("series", "text"), targets=1):
    path, _ = make_corpus(tmp_path, n=12, task=task, modalities=modalities, targets=targets)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "paths.output_dir=/tmp/x",
                f"paths.root={tmp_path}",
                "data=manifest",
                f"data.path={path}",
                f"data.source.task={task}",
                "model.gru.hidden_size=8",
                *overrides,
            ],
        )
    dm = build_datamodule(cfg)
    dm.validate()
    return cfg, dm


EXPECTED = {
    "multiclass": ({"acc", "f1"}, 3),
    "binary": ({"acc", "f1", "auroc"}, 1),
    "multilabel": ({"acc", "f1"}, 3),
    "regression": ({"mae", "corr", "acc2", "acc2_nonzero"}, 1),
    "regression-3": ({"mae", "corr", "acc2", "acc2_nonzero"}, 3),  # three targets per sample
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_each_task_trains_a_step_and_logs_its_metrics(tmp_path, case):
    task, _, targets = case.partition("-")
    cfg, dm = _setup(tmp_path, task, SERIES, TEXT, targets=int(targets or 1))
    module = build_module(cfg, datamodule=dm)
    names, outputs = EXPECTED[case]
    assert module.task == task and module.net.head[-1].out_features == outputs
    logged = {}
    module.log = lambda name, value, **k: logged.__setitem__(name, value)
    module.log_dict = lambda d, **k: logged.update(d)
    batch = next(iter(dm.train_dataloader()))
    loss = module._step(batch, "train")
    loss.backward()
    assert torch.isfinite(loss) and "train/loss" in logged
    metrics = {k: float(v) for k, v in module.metrics["train_metrics"].compute().items()}
    assert set(metrics) == {f"train/{n}" for n in names}
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    pred = module.predict_step(batch, 0)
    key = "preds" if task == "regression" else "probs"
    expected_shape = (len(batch),) if outputs == 1 else (len(batch), outputs)
    assert tuple(pred[key].shape) == expected_shape


def test_sign_accuracy_as_mosi_reports_it():
    preds = torch.tensor([0.5, -1.0, 0.2, -0.1, 0.0])
    target = torch.tensor([1.0, -2.0, 0.0, 0.5, -0.3])
    has0, non0 = SignAccuracy(), SignAccuracy(exclude_zero=True)
    has0.update(preds, target)
    non0.update(preds, target)
    # non-negative vs negative: hits at 0, 1, 2 -> 3/5; positive vs negative without target 0: 0, 1, 4 of 4
    assert float(has0.compute()) == pytest.approx(0.6)
    assert float(non0.compute()) == pytest.approx(0.75)


def test_task_metrics_take_raw_logits():
    metrics = TaskMetrics("binary", 2)
    metrics.update(torch.tensor([[3.0], [-3.0], [0.4]]), torch.tensor([1.0, 0.0, 0.0]))
    assert float(metrics.compute()["acc"]) == pytest.approx(2 / 3)


def test_monitors_must_exist_for_the_task(tmp_path):
    cfg, dm = _setup(tmp_path, "regression", SERIES, TEXT)
    with pytest.raises(
        ConfigError,
        match=r"optimized_metric=val/acc is not logged for the regression task.*"
        r"callbacks\.model_checkpoint\.mode=min",
    ):
        check_monitors(cfg, "regression")
    cfg.optimized_metric = cfg.callbacks.model_checkpoint.monitor = "val/mae"
    check_monitors(cfg, "regression")
    cfg, _ = _setup(
        tmp_path,
        "regression",
        SERIES,
        TEXT,
        "callbacks=early_stop",
        "optimized_metric=val/mae",
        "callbacks.model_checkpoint.monitor=val/mae",
    )
    assert cfg.callbacks.early_stopping.monitor == "val/mae"  # follows the checkpoint's metric
    check_monitors(cfg, "regression")
    cfg.callbacks.early_stopping.monitor = "val/f1"
    with pytest.raises(ConfigError, match=r"callbacks\.early_stopping\.monitor=val/f1 is not logged"):
        check_monitors(cfg, "regression")


def test_model_config_follows_the_data(tmp_path):
    cfg, dm = _setup(tmp_path, "multiclass", SERIES, modalities=("series", "text"))
    with pytest.raises(
        ConfigError,
        match=r"modalities \['text'\] with no encoder.*\+model/encoder@model\.encoders\.text=text_embedding",
    ):
        build_module(cfg, datamodule=dm)
    cfg, dm = _setup(
        tmp_path, "multiclass", SERIES, "model.encoders.series.in_features=5", modalities=("series",)
    )
    with pytest.raises(ConfigError, match=r"model\.encoders\.series\.in_features=5, but the data has 3"):
        build_module(cfg, datamodule=dm)
    cfg, dm = _setup(tmp_path, "multiclass", SERIES, "model.modalities=[video]", modalities=("series",))
    with pytest.raises(ConfigError, match=r"model\.modalities names 'video', which the data lacks"):
        build_module(cfg, datamodule=dm)
    # the avdigits encoders the data does not use are dropped; the sizes it knows are filled in
    cfg, dm = _setup(tmp_path, "multiclass", SERIES, TEXT, modalities=("series", "text"))
    net = build_module(cfg, datamodule=dm).net
    assert net.modalities == ["series", "text"]
    assert net.encoders["text"].embed.num_embeddings == dm.vocab_sizes["text"]
    assert net.encoders["series"].proj[0].in_features == 3


def test_checkpoint_keeps_classes_and_vocabulary_and_checks_them(tmp_path):
    from gru_mm.checkpoints import CheckpointError

    cfg, dm = _setup(tmp_path, "multiclass", SERIES, TEXT)
    module = build_module(cfg, datamodule=dm)
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    saved = checkpoint["gru_mm_data"]
    assert saved["classes"] == ["high", "low", "mid"] and saved["vocab"]["text"][:2] == ["<pad>", "<unk>"]
    module.on_load_checkpoint(checkpoint)  # the same data: fine
    module.data_meta = {**saved, "classes": ["high", "low", "mid", "new"]}
    with pytest.raises(CheckpointError, match="trained with other classes than the data gives now"):
        module.on_load_checkpoint(checkpoint)


def test_several_regression_targets_pool_mae_and_average_correlation():
    metrics = TaskMetrics("regression", 2)
    target = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    out = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])  # target 0 exact, target 1 reversed
    metrics.update(out, target)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["corr"] == pytest.approx(0.0, abs=1e-6)  # the mean of r = 1 and r = -1
    assert values["mae"] == pytest.approx(4 / 6)  # |errors| 0,0,0 and 2,0,2 over six values


def test_class_weights_follow_the_training_counts_per_task():
    from gru_mm.models.module import loss_class_weights

    multiclass = torch.tensor([0, 0, 0, 1, 2, 2])  # class 3 never occurs: it counts as one
    torch.testing.assert_close(
        loss_class_weights("balanced", "multiclass", 4, multiclass),
        torch.tensor([6 / 12, 6 / 4, 6 / 8, 6 / 4]),
    )
    binary = torch.tensor([0.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(loss_class_weights("balanced", "binary", 1, binary), torch.tensor([3.0]))
    torch.testing.assert_close(loss_class_weights([1, 4], "binary", 1, None), torch.tensor([4.0]))
    multilabel = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(
        loss_class_weights("balanced", "multilabel", 2, multilabel), torch.tensor([1 / 3, 3.0])
    )
    assert loss_class_weights(None, "multiclass", 3, multiclass) is None
    assert loss_class_weights("balanced", "multiclass", 3, None) is None  # prediction: no data, no loss
    with pytest.raises(
        ConfigError,
        match=r"loss\.class_weights has 2 weights, and this multiclass task needs 3: "
        r"one per class \(a, b, c\)",
    ):
        loss_class_weights([1, 2], "multiclass", 3, None, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="this task is regression"):
        loss_class_weights("balanced", "regression", 1, torch.zeros(3))


def test_weighted_loss_is_the_weighted_mean_and_checkpoints_stay_alike(tmp_path):
    cfg, dm = _setup(
        tmp_path, "multiclass", SERIES, TEXT, "loss.class_weights=balanced", "loss.label_smoothing=0.1"
    )
    module = build_module(cfg, datamodule=dm)
    targets = dm.train_targets()
    counts = torch.bincount(targets, minlength=3).float()
    expected = len(targets) / (3 * counts)
    torch.testing.assert_close(module.loss_fn.weight, expected)
    assert module.loss_fn.label_smoothing == 0.1
    batch = next(iter(dm.train_dataloader()))
    module.eval()
    logits = module.outputs(batch)
    manual = torch.nn.functional.cross_entropy(logits, batch.target, weight=expected, label_smoothing=0.1)
    torch.testing.assert_close(module.loss_fn(logits, batch.target), manual)
    # weights come from the data each time: a weighted run's state dict loads into an unweighted module
    assert "loss_fn.weight" not in module.state_dict()
    cfg_plain, _ = _setup(tmp_path / "plain", "multiclass", SERIES, TEXT)
    build_module(cfg_plain, datamodule=dm).load_state_dict(module.state_dict())


def test_bad_class_weights_fail_before_data_is_read(tmp_path):
    from gru_mm.config import check_config

    for value, message in (("balance", "got 'balance'"), ("[1,-2]", "got [1, -2]")):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["paths.output_dir=/tmp/x", f"loss.class_weights={value}"])
        with pytest.raises(
            ConfigError,
            match=r"loss\.class_weights must be null, balanced or a list of positive "
            rf"numbers, {re.escape(message)}",
        ):
            check_config(cfg)


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_balanced_weights_weigh_the_positives_of_each_output(tmp_path, task):
    cfg, dm = _setup(tmp_path, task, SERIES, TEXT, "loss.class_weights=balanced")
    module = build_module(cfg, datamodule=dm)
    targets = dm.train_targets().reshape(len(dm.train_targets()), -1).float()
    positives = targets.sum(0)
    torch.testing.assert_close(module.loss_fn.pos_weight, (len(targets) - positives) / positives)
    module.eval()  # no dropout: the two forward passes below agree
    module.log = lambda *a, **k: None
    batch = next(iter(dm.train_dataloader()))
    logits = module.outputs(batch)
    manual = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, batch.target, pos_weight=module.loss_fn.pos_weight
    )
    torch.testing.assert_close(module._step(batch, "val"), manual)
