"""Series with unmeasured values (empty CSV cells, NaN in .npy): refused by default; with
data.source.series.missing=mask carried forward with an observed mask and the time since the last
measurement, standardised on measured values only, and decoded the same way for prediction."""

from __future__ import annotations

import numpy as np
import pytest
from byod_files import make_corpus

from gru_mm.data.kinds.series import with_missingness
from gru_mm.data.sources.base import SPLITS, DataError
from gru_mm.data.sources.manifest import Manifest


def test_with_missingness_carries_forward_and_counts_time_since_the_last_measurement():
    nan = np.nan
    values = np.array([[nan, 1.0], [2.0, nan], [nan, nan], [4.0, 5.0]], dtype=np.float32)
    out = with_missingness(values, np.array([0.0, 0.5, 2.0, 3.0]))
    np.testing.assert_array_equal(out[:, :2], [[0, 1], [2, 1], [2, 1], [4, 5]])  # carried forward, 0 before
    np.testing.assert_array_equal(out[:, 2:4], [[0, 1], [1, 0], [0, 0], [1, 1]])  # measured here
    since = [[0, 0], [0, 0.5], [1.5, 2.0], [0, 0]]  # f0 before its first measurement: time since the start
    np.testing.assert_allclose(out[:, 4:], np.log1p(since), rtol=1e-6)
    steps = with_missingness(values)  # no times: in steps
    np.testing.assert_allclose(steps[:, 4:], np.log1p([[0, 0], [0, 1], [1, 2], [0, 0]]), rtol=1e-6)


@pytest.fixture()
def gappy(tmp_path):
    """A manifest whose series CSVs have empty cells (every third value of feature f1)."""
    path, rows = make_corpus(tmp_path / "m", n=12, modalities=("series",))
    rng = np.random.default_rng(1)
    for r in rows:
        file = tmp_path / "m" / r["series"]
        if file.suffix == ".csv":
            lines = file.read_text().splitlines()
            for k in range(1, len(lines), 3):  # blank the f1 cell: time,f0,f1,f2
                cells = lines[k].split(",")
                cells[2] = ""
                lines[k] = ",".join(cells)
            file.write_text("\n".join(lines) + "\n")
        else:
            a = np.load(file)
            a[rng.random(a.shape) < 0.3] = np.nan
            np.save(file, a)
    return path, rows


def test_missing_values_are_problems_by_default(gappy, tmp_path):
    path, rows = gappy
    source = Manifest(path, cache_dir=tmp_path / "cache")
    source.load()
    kinds = {(p.modality, p.kind) for p in source.problems}
    assert ("series", "NaN or infinite values") in kinds
    with pytest.raises(DataError, match="data.source.series.missing='drop' must be one of error, mask"):
        Manifest(path, series={"missing": "drop"})


def test_masked_series_train_and_predict_alike(gappy, tmp_path):
    path, rows = gappy
    source = Manifest(path, cache_dir=tmp_path / "cache", series={"missing": "mask"})
    source.load()
    assert source.problems == [] and source.feature_shapes["series"] == (
        9,
    )  # 3 features x (value, mask, time)
    train = np.concatenate([s.modalities["series"] for s in source.split("train")])
    assert not np.isnan(train).any()
    measured = train[:, 3:6] == 1
    for f in range(3):  # standardised with the measured values' mean and std
        v = train[measured[:, f], f]
        assert abs(v.mean()) < 1e-5 and v.std() == pytest.approx(1.0, abs=1e-4)
    assert (measured == 0).any()
    again, problems = Manifest(path, cache_dir=tmp_path / "cache", series={"missing": "mask"}).as_trained(
        source.state(), {}
    )
    assert problems == []
    trained = {s.id: s for split in SPLITS for s in source.split(split)}
    for s in again:  # new rows are decoded exactly as training saw them
        np.testing.assert_allclose(s.modalities["series"], trained[s.id].modalities["series"], rtol=1e-6)
