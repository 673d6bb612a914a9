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
