"""The features adapter: MultiBench/MMSA pickles (aligned and unaligned) and the generic npz."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from byod_files import write_mosi_pickle, write_npz

from gru_mm.data.sources.base import SPLITS, DataError
from gru_mm.data.sources.features import Features


def test_pickle_needs_explicit_trust(tmp_path):
    path = write_mosi_pickle(tmp_path / "mosi.pkl")
    with pytest.raises(DataError, match=r"runs any code inside it, so set data\.trust_pickle=true") as err:
        Features(path)
    assert str(err.value).count(". ") == 0  # one sentence


def test_unaligned_pickle_uses_lengths(tmp_path):
    path = write_mosi_pickle(tmp_path / "mosi.pkl")
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    source = Features(path, trust_pickle=True)
    assert source.feature_shapes == {"audio": (5,), "text": (6,), "vision": (4,)}
    assert source.num_classes == 1 and source.task == "regression"
    assert [len(source.split(s)) for s in SPLITS] == [24, 8, 8]  # "valid" is val
    first = source.split("val")[0]
    assert first.id == "valid_0"
    assert first.target == pytest.approx(float(raw["valid"]["regression_labels"][0]))
    for m in ("text", "audio", "vision"):
        n = int(raw["valid"][f"{m}_lengths"][0])
        np.testing.assert_array_equal(first.modalities[m], raw["valid"][m][0, :n])


def test_aligned_pickle_trims_zero_padding(tmp_path):
    path = write_mosi_pickle(tmp_path / "aligned.pkl", aligned=True)
    source = Features(path, trust_pickle=True)
    lengths = {len(s.modalities["text"]) for s in source.split("train")}
    assert len(lengths) > 1 and max(lengths) <= 12  # true lengths, not the padded 12 everywhere
    kept = Features(path, trust_pickle=True, trim_zero_steps=False)
    assert {len(s.modalities["text"]) for s in kept.split("train")} == {12}


def test_npz_concatenated_binary_and_missing_split(tmp_path):
    path = write_npz(tmp_path / "f.npz", {"train": 30, "test": 6})
    source = Features(path, task="binary")
    assert source.feature_shapes == {"series": (2,)} and source.num_classes == 1
    # no val in the file: cut from train with the seeded fractions
    assert [len(source.split(s)) for s in SPLITS] == [27, 3, 6]  # only the missing split is cut
    assert {s.target for s in source.split("train")} == {0.0, 1.0}
    assert all(s.id.startswith("train") for s in source.split("val"))


def test_bad_feature_values_are_problems(tmp_path):
    path = write_mosi_pickle(tmp_path / "mosi.pkl")
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    raw["train"]["audio"][3, 0, 0] = -np.inf
    raw["train"]["audio_lengths"][5] = 99
    raw["test"]["regression_labels"][1] = np.nan
    with open(path, "wb") as fh:
        pickle.dump(raw, fh)
    source = Features(path, trust_pickle=True)
    assert sorted((p.id, p.modality, p.kind) for p in source.problems) == [
        ("test_1", "label", "NaN or infinite values"),
        ("train_3", "audio", "NaN or infinite values"),
        ("train_5", "audio", "length out of range"),
    ]
    assert len(source.split("train")) == 22
    cleaned = Features(path, trust_pickle=True, nan_to_num=True)
    assert [p.id for p in cleaned.problems] == ["train_5", "test_1"]


def test_unusable_files_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="must be a .pkl/.pickle"):
        Features(tmp_path / "f.h5")
    with pytest.raises(DataError, match="no such features file"):
        Features(tmp_path / "none.npz").load()
    np.savez(tmp_path / "bad.npz", **{"training/x": np.zeros(3)})
    with pytest.raises(DataError, match="key 'training/x' is not <split>/<name>"):
        Features(tmp_path / "bad.npz").load()
    path = write_mosi_pickle(tmp_path / "mosi.pkl")
    with pytest.raises(DataError, match=r"data\.source\.modalities names \['speech'\]"):
        Features(path, trust_pickle=True, modalities=["speech"]).load()


def test_as_trained_reads_every_split_as_training_decodes_it(tmp_path):
    """Prediction input: all samples of the file, labels ignored, with the lengths and checks of training."""
    path = write_mosi_pickle(tmp_path / "mosi.pkl")
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    raw["valid"]["audio"][2, 0, 0] = np.nan
    for part in raw.values():
        del part["regression_labels"]  # new data has no labels
    with open(path, "wb") as fh:
        pickle.dump(raw, fh)
    samples, problems = Features(path, trust_pickle=True).as_trained({"modalities": ["audio", "vision"]}, {})
    assert [(p.id, p.modality, p.kind) for p in problems] == [("valid_2", "audio", "NaN or infinite values")]
    assert len(samples) == 24 + 8 + 8 - 1 and samples[0].target is None
    by_id = {s.id: s for s in samples}
    n = int(raw["test"]["vision_lengths"][3])
    np.testing.assert_array_equal(by_id["test_3"].modalities["vision"], raw["test"]["vision"][3, :n])
    assert set(by_id["test_3"].modalities) == {"audio", "vision"}  # text: not the model's


def test_as_trained_npz_without_splits_and_an_absent_modality(tmp_path):
    rng = np.random.default_rng(0)
    lengths = np.array([3, 1, 4])
    np.savez(tmp_path / "new.npz", series=rng.normal(size=(8, 2)).astype(np.float32), series_lengths=lengths)
    samples, problems = Features(tmp_path / "new.npz").as_trained({"modalities": ["series", "audio"]}, {})
    assert problems == [] and [s.id for s in samples] == ["000000", "000001", "000002"]
    assert [len(s.modalities["series"]) for s in samples] == [3, 1, 4]
    assert all(s.modalities["audio"] is None for s in samples)  # not in the file: absent, as an empty cell
    with pytest.raises(DataError, match=r"new\.npz has none of the model's modalities \['text'\]"):
        Features(tmp_path / "new.npz").as_trained({"modalities": ["text"]}, {})
    np.savez(tmp_path / "odd.npz", a=np.zeros((3, 2, 1)), b=np.zeros((4, 2, 1)))
    with pytest.raises(DataError, match=r"different numbers of samples \{'a': 3, 'b': 4\}"):
        Features(tmp_path / "odd.npz").as_trained({"modalities": ["a", "b"]}, {})


def test_as_trained_with_labels_encodes_them_with_the_trained_classes(tmp_path):
    from gru_mm.data.targets import LabelCoder

    path = write_npz(tmp_path / "f.npz", {"train": 6, "test": 4})
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test/labels"] = np.array([1, 0, 7, 1])  # 7: not a class of the trained model
    np.savez(path, **arrays)
    coder = LabelCoder.from_meta({"task": "multiclass", "classes": None, "num_classes": 2})
    samples, problems = Features(path, task="multiclass").as_trained({"modalities": ["series"]}, {}, coder)
    assert [(p.id, p.modality, p.kind) for p in problems] == [("test2", "label", "label out of range")]
    by_id = {s.id: s.target for s in samples}
    assert by_id["test0"] == 1 and by_id["test1"] == 0 and len(by_id) == 6 + 4 - 1
    named = LabelCoder.from_meta({"task": "binary", "classes": ["no", "yes"], "num_classes": 1})
    assert named.encode("yes") == 1.0 and named.num_outputs == 1
    flat = tmp_path / "flat.npz"  # no split prefix: one part, labels included
    np.savez(
        flat, series=arrays["test/series"], series_lengths=arrays["test/series_lengths"], labels=[1, 0, 1, 1]
    )
    samples, problems = Features(flat).as_trained({"modalities": ["series"]}, {}, coder)
    assert problems == [] and [s.target for s in samples] == [1, 0, 1, 1]
    arrays["test/labels"] = arrays["test/labels"][:3]
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="split 'test' has 3 labels for 4 samples"):
        Features(path).as_trained({"modalities": ["series"]}, {}, coder)
