"""data.augment: shapes, padding invariance, seeding, training batches only, config, one CLI run."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from pytorch_lightning.trainer.states import RunningStage

from conftest import run_cli
from gru_mm.config import check_config, register_resolvers
from gru_mm.data.augment import BatchAugment, build_augment
from gru_mm.data.augment.text import UNK_ID
from gru_mm.data.batch import Batch, pad_sequences
from gru_mm.data.kinds.vocabulary import UNK, Vocabulary
from gru_mm.models.build import build_datamodule
from gru_mm.paths import CONF_DIR

register_resolvers()

KINDS = {"a": "audio", "v": "frames", "s": "series", "t": "text"}
SHAPES = {"a": (40,), "v": (3, 16, 16), "s": (5,), "t": ()}


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/x", *overrides])


STANDARD = OmegaConf.to_container(_compose("data/augment=standard").data.augment)
STRONG = dict(STANDARD, text={"word_dropout": 0.5})  # short test sentences always lose a word


def _sequence(kind: str, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (length, *SHAPES[next(m for m, k in KINDS.items() if k == kind)])
    if kind == "text":
        return torch.randint(2, 50, shape, generator=g)
    if kind == "frames":
        return torch.rand(shape, generator=g)
    return torch.randn(shape, generator=g)


def _batch(lengths: list[int | None], seed: int = 0) -> Batch:
    """A batch of every kind; None: a sample without that modality."""
    inputs = {}
    for m, kind in KINDS.items():
        arrays = [None if n is None else _sequence(kind, n, seed + i) for i, n in enumerate(lengths)]
        inputs[m] = pad_sequences(arrays, SHAPES[m])
    return Batch([f"s{i}" for i in range(len(lengths))], torch.zeros(len(lengths), dtype=torch.int64), inputs)


def _augment(seed: int = 0, settings=None) -> BatchAugment:
    return build_augment(settings or STRONG, KINDS, SHAPES, seed)


def test_none_builds_nothing_and_the_preset_builds_a_transform_per_kind():
    none = OmegaConf.to_container(_compose().data.augment)
    assert build_augment(none, KINDS, SHAPES, 0) is None, (
        "the default must leave training batches as collated"
    )
    assert set(_augment().transforms) == set(KINDS)
    one = dict(none, text={"word_dropout": 0.1})
    assert set(build_augment(one, KINDS, SHAPES, 0).transforms) == {"t"}


def test_shapes_dtypes_lengths_and_presence_are_unchanged():
    batch = _batch([12, 3, None, 7])
    out = _augment()(batch)
    assert out.ids == batch.ids and out.target is batch.target
    for m, seq in batch.inputs.items():
        new = out.inputs[m]
        assert new.data.shape == seq.data.shape and new.data.dtype == seq.data.dtype, m
        assert new.lengths is seq.lengths and torch.equal(new.present, seq.present), m
        assert not torch.equal(new.data, seq.data), f"{m}: the preset changed nothing"


@pytest.mark.parametrize("modality", list(KINDS))
def test_padding_never_changes_a_result(modality):
    """The same sample padded to two batch lengths gets the same augmented real steps; padding stays 0."""
    alone = _batch([9])
    padded = _batch([9, 23])  # the first sample is the same; the second pads it to 23 steps
    assert torch.equal(padded.inputs[modality].data[0, :9], alone.inputs[modality].data[0])
    short, long = _augment(seed=3)(alone).inputs[modality], _augment(seed=3)(padded).inputs[modality]
    assert torch.equal(short.data[0], long.data[0, :9])
    assert not torch.equal(short.data[0], alone.inputs[modality].data[0]), "nothing was augmented"
    assert long.data[0, 9:].count_nonzero() == 0, "a padded step was written"
    assert long.data[1, 23:].numel() == 0 and long.data[1].abs().sum() > 0


def test_time_masks_stay_within_each_true_length():
    # strong masks on short audio in a long batch: every padded step must stay exactly zero
    settings = dict(
        STANDARD, audio=dict(STANDARD["audio"], time_masks=5, time_mask_param=50, max_time_fraction=1.0)
    )
    batch = _batch([4, 60, 2])
    out = _augment(settings=settings)(batch).inputs["a"]
    for i, n in enumerate(batch.inputs["a"].lengths.tolist()):
        assert out.data[i, n:].count_nonzero() == 0


def test_same_seed_same_augmentations_other_seed_others_and_state_resumes():
    batch = _batch([10, 6, 14])
    first, again = _augment(seed=7), _augment(seed=7)
    a1, b1 = first(batch), again(batch)
    for m in KINDS:
        assert torch.equal(a1.inputs[m].data, b1.inputs[m].data), m
    other = _augment(seed=8)(batch)
    assert all(not torch.equal(a1.inputs[m].data, other.inputs[m].data) for m in KINDS)
    # the next batch draws anew; a generator restored from the state before it draws the same again
    state = first.state_dict()
    a2 = first(batch)
    assert not torch.equal(a2.inputs["a"].data, a1.inputs["a"].data)
    resumed = _augment(seed=0)
    resumed.load_state_dict(state)
    r2 = resumed(batch)
    for m in KINDS:
        assert torch.equal(a2.inputs[m].data, r2.inputs[m].data), m


def test_the_global_random_numbers_are_left_as_they_were():
    # dropout and modality dropout draw from torch's global generator: augmenting must not shift them
    torch.manual_seed(5)
    before = torch.get_rng_state()
    _augment()(_batch([8, 5]))
    assert torch.equal(torch.get_rng_state(), before)


def test_salt_gives_each_process_its_own_draws():
    batch = _batch([10])
    rank0, rank1 = _augment(seed=1)(batch, salt=0), _augment(seed=1)(batch, salt=1)
    assert not torch.equal(rank0.inputs["a"].data, rank1.inputs["a"].data)


def test_word_dropout_writes_the_vocabularys_unk_id_only():
    assert Vocabulary.build(["a b c"]).index[UNK] == UNK_ID
    settings = dict(STANDARD, text={"word_dropout": 0.5})
    batch = _batch([40, 10])
    out = _augment(settings=settings)(batch).inputs["t"]
    changed = out.data != batch.inputs["t"].data
    assert changed.any() and (out.data[changed] == UNK_ID).all()
    assert out.data[1, 10:].count_nonzero() == 0  # <pad> (0) stays <pad>


def test_audio_masks_fill_with_the_sequences_mean():
    settings = dict(STANDARD, audio=dict(STANDARD["audio"], time_masks=0, freq_masks=1, freq_mask_param=20))
    batch = _batch([30])
    seq = batch.inputs["a"].data[0]
    out = _augment(settings=settings)(batch).inputs["a"].data[0]
    changed = out != seq
    assert changed.any()
    assert torch.allclose(out[changed], seq.mean().expand(int(changed.sum())))


def _datamodule(tmp_path, *overrides: str):
    cfg = _compose(
        f"paths.root={tmp_path}",
        "data.source.n_train=24",
        "data.source.n_val=8",
        "data.source.n_test=8",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        *overrides,
    )
    check_config(cfg)
    return build_datamodule(cfg)


def test_only_training_batches_are_augmented(tmp_path):
    dm = _datamodule(tmp_path, "data/augment=standard")
    dm.prepare_data()
    dm.trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    batch = next(iter(dm.train_dataloader()))
    for stage in (
        RunningStage.VALIDATING,
        RunningStage.SANITY_CHECKING,
        RunningStage.TESTING,
        RunningStage.PREDICTING,
    ):
        dm.trainer.state.stage = stage
        assert dm.on_after_batch_transfer(batch, 0) is batch, stage
    dm.trainer.state.stage = RunningStage.TRAINING
    out = dm.on_after_batch_transfer(batch, 0)
    assert set(dm.augmentation().transforms) == {"audio", "video"}  # avdigits: audio and frames kinds
    assert not torch.equal(out.inputs["audio"].data, batch.inputs["audio"].data)
    assert not torch.equal(out.inputs["video"].data, batch.inputs["video"].data)
    assert "augment" in dm.state_dict(), "a checkpoint would not hold the augmentation's generator"


def test_the_default_config_leaves_training_batches_alone(tmp_path):
    dm = _datamodule(tmp_path)
    dm.prepare_data()
    dm.trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    dm.trainer.state.stage = RunningStage.TRAINING
    batch = next(iter(dm.train_dataloader()))
    assert dm.on_after_batch_transfer(batch, 0) is batch
    assert dm.augmentation() is None and dm.state_dict() == {}  # checkpoints as before


class _Recorder(pl.LightningModule):
    """Records what each step receives."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[str, list[Batch]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch)
        return self.weight * 0 + 1.0

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_a_fit_augments_training_batches_and_not_validation_ones(tmp_path):
    dm = _datamodule(tmp_path, "data/augment=standard")
    module = _Recorder()
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    samples = {s.id: s for split in ("train", "val") for s in dm.source.split(split)}

    def same_as_collated(batch: Batch) -> bool:
        return all(
            torch.equal(seq.data[i, :n], torch.as_tensor(samples[sid].modalities[m]))
            for m, seq in batch.inputs.items()
            for i, (sid, n) in enumerate(zip(batch.ids, seq.lengths.tolist(), strict=True))
        )

    assert module.seen["train"] and module.seen["val"]
    assert not any(same_as_collated(b) for b in module.seen["train"])
    assert all(same_as_collated(b) for b in module.seen["val"])


@pytest.mark.slow
def test_cli_trains_with_the_preset(isolated_root):
    result = run_cli(
        "gru-mm-train", f"paths.root={isolated_root}", "debug=smoke", "data/augment=standard", "logger=csv"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "data.augment: BatchAugment(audio=" in out
    (metrics,) = isolated_root.glob("logs/train/runs/*/csv/version_*/metrics.csv")
    assert "test/acc" in metrics.read_text().splitlines()[0]


def _fit_epochs(tmp_path, epochs: int, name: str, ckpt_path=None) -> tuple[_Recorder, pl.Trainer]:
    dm = _datamodule(tmp_path, "data/augment=standard")
    module = _Recorder()
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path / name,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


@pytest.mark.slow
def test_a_resumed_fit_continues_the_augmentation_draws(tmp_path):
    whole, _ = _fit_epochs(tmp_path, 2, "whole")
    first, trainer = _fit_epochs(tmp_path, 1, "first")
    ckpt = trainer.checkpoint_callback.best_model_path
    assert "augment" in torch.load(ckpt, weights_only=True)["SequenceDataModule"]
    resumed, _ = _fit_epochs(tmp_path, 2, "resumed", ckpt_path=ckpt)
    second_epoch = whole.seen["train"][len(first.seen["train"]) :]
    assert len(second_epoch) == len(resumed.seen["train"]) > 0
    for a, b in zip(second_epoch, resumed.seen["train"], strict=True):
        assert a.ids == b.ids
        for m in a.inputs:
            assert torch.equal(a.inputs[m].data, b.inputs[m].data), m
