"""The realistic data generator: real files that `data=manifest` reads, held-out speakers and writers."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from gru_mm.data.sources.manifest import Manifest
from gru_mm.data.sources.realistic import GeneratorError, RealisticSpec, generate

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
SMALL = {"n_train": 30, "n_val": 6, "n_test": 10, "speakers": (3, 1, 2), "writers": (3, 1, 2)}


def rows_of(manifest):
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return generate(tmp_path_factory.mktemp("realistic"), **SMALL)


@pytest.mark.slow
@needs_espeak
def test_manifest_reads_with_held_out_speakers_and_writers(small_set):
    rows = rows_of(small_set)
    assert [sum(r["split"] == s for r in rows) for s in ("train", "val", "test")] == [30, 6, 10]
    for column in ("speaker", "writer"):
        by_split = {s: {r[column] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
        assert not by_split["train"] & (by_split["val"] | by_split["test"]), column  # unseen in training
        assert not by_split["val"] & by_split["test"], column
    spec = json.loads((small_set.parent / "spec.json").read_text())
    assert len(spec["speakers_by_split"]["train"]) == 3 and len(spec["writers_by_split"]["test"]) == 2
    wave, rate = sf.read(small_set.parent / rows[0]["audio"])
    assert rate == 16000 and 0.2 < len(wave) / rate < 3 and np.abs(wave).max() > 0.05  # a spoken word
    frames = sorted((small_set.parent / rows[0]["frames"]).iterdir())
    assert 2 <= len(frames) <= 8 and Image.open(frames[0]).size == (32, 32)
    source = Manifest(small_set, cache_dir=small_set.parent / "cache", frames={"height": 32, "width": 32})
    assert source.feature_shapes == {"audio": (40,), "frames": (3, 32, 32)}
    assert sorted({int(s.target) for s in source.split("train")}) == sorted(
        {int(r["label"]) for r in rows if r["split"] == "train"}
    )


@pytest.mark.slow
@needs_espeak
def test_same_spec_writes_the_same_files(small_set, tmp_path):
    again = generate(tmp_path, **SMALL)
    assert again.read_text() == small_set.read_text()
    row = rows_of(again)[0]
    assert (again.parent / row["audio"]).read_bytes() == (small_set.parent / row["audio"]).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("size,writer_source", [(64, "fonts"), (224, "both")])
def test_frames_at_other_sizes_and_from_fonts(tmp_path, size, writer_source):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    spec = dict(
        n_train=4, n_val=2, n_test=2, speakers=(1, 1, 1), writers=(2, 1, 1), min_frames=2, max_frames=2
    )
    manifest = generate(tmp_path, size=size, writer_source=writer_source, channels=1, **spec)
    rows = rows_of(manifest)
    assert any(r["writer"].startswith("font-") for r in rows)
    image = Image.open(next((manifest.parent / rows[0]["frames"]).iterdir()))
    assert image.size == (size, size) and image.mode == "L"


def test_a_setting_that_cannot_work_is_one_sentence():
    with pytest.raises(GeneratorError, match="size must be between 8 and 512"):
        RealisticSpec(size=4).check()
    with pytest.raises(GeneratorError, match="min_frames <= max_frames"):
        RealisticSpec(min_frames=5, max_frames=2).check()
