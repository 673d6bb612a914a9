"""A corpus of defects: each one gives exactly one problem line (id, column, kind), and only that sample
is left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from byod_files import make_corpus, write_manifest, write_png, write_series_csv, write_wav

from gru_mm.data.sources.base import SPLITS, DataError, DataProblems
from gru_mm.data.sources.manifest import Manifest

SMALL = {"audio": {"sample_rate": 8000, "n_fft": 256, "hop_length": 128}, "frames": {"height": 8, "width": 8}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    _, rows = make_corpus(root / "data", n=12)
    return root, rows


def _bad_file(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path.name


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


ROW = 9  # the edited row: s009, in val, so a label unseen in training is unknown rather than a new class


def _set(column, value):
    return lambda d, r: r.__setitem__(column, value)


def _write(column, name, writer):
    def edit(d: Path, r: dict) -> None:
        writer(d / name)
        r[column] = name

    return edit


def _series_npy(array):
    return lambda p: np.save(p, array)


def _series_csv_text(text):
    return lambda p: p.write_text(text)


def _truncated_wav(p: Path) -> None:
    write_wav(p, 0.5)
    _cut(p)


def _truncated_png(p: Path) -> None:
    write_png(p, size=32)
    _cut(p)


def _empty_folder(d: Path, r: dict) -> None:
    (d / "frames_empty").mkdir(exist_ok=True)
    r["frames"] = "frames_empty"


def _outside(d: Path, r: dict) -> None:
    write_wav(d.parent / "outside.wav")
    r["audio"] = "../outside.wav"


def _duplicate(d: Path, r: dict) -> None:
    r["id"] = "s008"  # s009's row now repeats s008's id: the later row is the problem


DEFECTS = {
    "missing file": (_set("audio", "audio/nope.wav"), "audio"),
    "path leaves the manifest folder": (_outside, "audio"),
    "unreadable audio": (
        _write("audio", "junk.wav", lambda p: _bad_file(p, b"not a wav file" * 10)),
        "audio",
    ),
    "truncated audio": (_write("audio", "cut.wav", _truncated_wav), "audio"),
    "empty audio": (_write("audio", "empty.wav", lambda p: write_wav(p, 0.0)), "audio"),
    "unsupported file type": (
        _write("audio", "clip.m4a", lambda p: _bad_file(p, b"\0\0\0 ftypM4A " + b"\0" * 64)),  # AAC
        "audio",
    ),
    "unreadable image": (_write("frames", "junk.png", lambda p: _bad_file(p, b"PNG? no" * 5)), "frames"),
    "truncated image": (_write("frames", "cut.png", _truncated_png), "frames"),
    "no images": (_empty_folder, "frames"),
    "NaN or infinite values": (
        _write("series", "nan.npy", _series_npy(np.array([[1.0, np.nan, 2.0]] * 4))),
        "series",
    ),
    "wrong array rank": (_write("series", "rank3.npy", _series_npy(np.zeros((4, 3, 2)))), "series"),
    "wrong feature size": (_write("series", "wide.npy", _series_npy(np.ones((4, 5)))), "series"),
    "empty series": (_write("series", "empty.npy", _series_npy(np.zeros((0, 3)))), "series"),
    "unreadable array": (
        _write("series", "junk.npy", lambda p: _bad_file(p, b"\x93NUMPY garbage")),
        "series",
    ),
    "non-numeric values": (
        _write("series", "words.csv", _series_csv_text("time,a,b,c\n0,1,x,2\n1,2,y,3\n")),
        "series",
    ),
    "time goes backwards": (
        _write("series", "back.csv", _series_csv_text("time,a,b,c\n1,1,1,2\n0.5,2,2,3\n")),
        "series",
    ),
    "no words": (_set("text", "?!?"), "text"),
    "unknown label": (_set("label", "purple"), "label"),
    "label out of range": (_set("label", "7"), "label"),
    "empty required column": (_set("label", ""), "label"),
    "duplicate id": (_duplicate, "id"),
    "unknown split": (_set("split", "training"), "split"),
}


@pytest.mark.parametrize("kind", list(DEFECTS))
def test_each_defect_gives_exactly_its_problem(corpus, kind):
    root, rows = corpus
    data = root / "data"
    edit, column = DEFECTS[kind]
    rows = [dict(r) for r in rows]
    edit(data, rows[ROW])
    manifest = write_manifest(data / f"manifest-{kind.replace(' ', '_')}.csv", rows)
    source = Manifest(manifest, cache_dir=root / "cache", **SMALL)
    splits = source.load()
    expected_id = rows[ROW]["id"]
    assert [(p.id, p.modality, p.kind) for p in source.problems] == [(expected_id, column, kind)], [
        p.line() for p in source.problems
    ]
    assert source.problems[0].line().startswith(f"{expected_id}\t{column}\t{kind}")
    # the bad row is left out and nothing else is
    assert sum(len(splits[s]) for s in SPLITS) == len(rows) - 1
    kept = {s.id for split in SPLITS for s in splits[split]}
    assert kind == "duplicate id" or rows[ROW]["id"] not in kept


def test_required_modality_and_regression_label(corpus):
    root, rows = corpus
    data = root / "data"
    rows = [dict(r, label=str(i * 0.5)) for i, r in enumerate(rows)]
    rows[2]["text"] = ""
    rows[3]["label"] = "loud"
    rows[5]["label"] = "inf"
    manifest = write_manifest(data / "manifest-regression.csv", rows)
    source = Manifest(manifest, cache_dir=root / "cache", task="regression", required=["text"], **SMALL)
    source.load()
    assert sorted((p.id, p.modality, p.kind) for p in source.problems) == [
        ("s002", "text", "empty required column"),
        ("s003", "label", "label not a number"),
        ("s005", "label", "NaN or infinite values"),
    ]


def test_several_regression_targets_and_a_label_with_another_count(corpus):
    root, rows = corpus
    rows = [dict(r, label=f"{i * 0.5};{-i}") for i, r in enumerate(rows)]
    rows[4]["label"] = "1.0"  # one value where the training labels have two
    manifest = write_manifest(root / "data" / "manifest-targets.csv", rows)
    source = Manifest(manifest, cache_dir=root / "cache", task="regression", classes=["hr", "sbp"], **SMALL)
    source.load()
    assert [(p.id, p.modality, p.kind) for p in source.problems] == [
        ("s004", "label", "wrong number of targets")
    ]
    assert source.num_classes == 2 and source.labels.classes == ["hr", "sbp"]
    sample = next(s for s in source.split("train") if s.id == "s003")
    np.testing.assert_array_equal(sample.target, np.array([1.5, -3.0], dtype=np.float32))
    three = Manifest(manifest, cache_dir=root / "cache", task="regression", classes=["a", "b", "c"], **SMALL)
    with pytest.raises(DataError, match="give 3 regression targets, but the training labels have 2 value"):
        three.load()


def test_jsonl_bad_line_and_empty_split(tmp_path):
    _, rows = make_corpus(tmp_path, n=6, modalities=("text",))
    path = tmp_path / "m.jsonl"
    write_manifest(path, rows)
    path.write_text(path.read_text() + "{not json\n")
    source = Manifest(path)
    source.load()
    assert [(p.id, p.modality, p.kind) for p in source.problems] == [("(line 7)", "-", "bad row")]
    only_train = [dict(r, split="train") for r in rows]
    source = Manifest(write_manifest(tmp_path / "t.csv", only_train))
    source.load()
    fatal = [p for p in source.problems if p.fatal]
    assert [p.detail for p in fatal] == ["val has no usable samples", "test has no usable samples"]


def test_datamodule_fails_listing_problems_or_skips(corpus):
    from gru_mm.data.datamodule import SequenceDataModule

    root, rows = corpus
    rows = [dict(r) for r in rows]
    rows[1]["audio"] = "audio/missing.wav"
    manifest = write_manifest(root / "data" / "manifest-dm.csv", rows)
    strict = SequenceDataModule(Manifest(manifest, cache_dir=root / "cache", **SMALL), path=str(manifest))
    with pytest.raises(DataProblems, match=r"1 data problem.*\ns001\taudio\tmissing file: audio/missing.wav"):
        strict.validate()
    lenient = SequenceDataModule(Manifest(manifest, cache_dir=root / "cache", **SMALL), on_error="skip")
    report = lenient.validate()
    assert report.skipped_ids == ["s001"]
    assert "s001" not in {s.id for s in lenient.source.split("train")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "m.txt"}, "a manifest must be"),
        ({"path": "m.csv", "task": "ranking"}, "data.source.task='ranking'"),
        ({"path": "m.csv", "columns": {"ecg": "wave"}}, "data.source.columns.ecg='wave'"),
        ({"path": "m.csv", "split_fractions": [0.5, 0.5]}, "data.source.split_fractions"),
        ({"path": "m.csv", "audio": {"rate": 8000}}, "data.source.audio has an unknown setting"),
    ],
)
def test_config_mistakes_fail_before_reading(tmp_path, kwargs, message):
    kwargs = {**kwargs, "path": tmp_path / kwargs["path"]}  # none of these files exists: nothing is read
    with pytest.raises(DataError, match=message.replace(".", r"\.").replace("(", r"\(")):
        Manifest(**kwargs)


def test_unusable_manifests_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="no such manifest file"):
        Manifest(tmp_path / "nope.csv").load()
    (tmp_path / "m.csv").write_text("name,label\na,1\n")
    with pytest.raises(DataError, match="has no 'id' column"):
        Manifest(tmp_path / "m.csv").load()
    (tmp_path / "m.csv").write_text("id,label,ecg\na,1,x.npy\n")
    with pytest.raises(DataError, match="no modality column"):
        Manifest(tmp_path / "m.csv").load()


def test_series_csv_time_becomes_timestamps(tmp_path):
    write_series_csv(tmp_path / "a.csv", 5, features=2, seed=1)
    source = Manifest(
        write_manifest(
            tmp_path / "m.csv",
            [
                {"id": f"x{i}", "label": str(i % 2), "series": "a.csv", "split": s}
                for i, s in enumerate(SPLITS)
            ],
        )
    )
    sample = source.split("train")[0]
    assert sample.modalities["series"].shape == (5, 2)
    assert sample.timestamps["series"].shape == (5,) and (np.diff(sample.timestamps["series"]) > 0).all()
