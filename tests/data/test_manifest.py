"""The manifest adapter: formats, decoding (audio, frames, text, series), the disk cache, splits, collate."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from byod_files import make_corpus, write_manifest, write_png, write_wav

from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.data.datamodule import SequenceDataModule
from gru_mm.data.kinds.series import Series
from gru_mm.data.kinds.vocabulary import UNK, Vocabulary, tokenize
from gru_mm.data.sources.base import SPLITS, DataError, Source
from gru_mm.data.sources.manifest import Manifest

SMALL = {"audio": {"sample_rate": 8000, "n_fft": 256, "hop_length": 128}, "frames": {"height": 8, "width": 8}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest")
    path, rows = make_corpus(root, n=12)
    return root, path, rows


def _by_id(source):
    return {s.id: s for split in SPLITS for s in source.split(split)}


def test_every_format_reads_the_same_samples(corpus, tmp_path):
    root, csv_path, rows = corpus
    reference = _by_id(Manifest(csv_path, cache_dir=tmp_path / "cache", **SMALL))
    for suffix in ("jsonl", "parquet"):
        path = write_manifest(root / f"manifest.{suffix}", rows)
        source = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
        assert isinstance(source, Source)
        samples = _by_id(source)
        assert source.problems == [] and samples.keys() == reference.keys()
        for sid, s in samples.items():
            assert s.target == reference[sid].target
            for m, a in s.modalities.items():
                np.testing.assert_array_equal(a, reference[sid].modalities[m])


def test_second_load_decodes_nothing(corpus, tmp_path, monkeypatch):
    _, path, rows = corpus
    first = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
    first.load()
    media = 3 * len(rows)  # audio, frames and series files per row (text is tokenised, never cached)
    assert (first.cache.misses, first.cache.hits) == (media, 0)
    # a second run: every decoder would fail if it were called
    import soundfile
    from PIL import Image

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(soundfile, "read", boom)
    monkeypatch.setattr(Image, "open", boom)
    monkeypatch.setattr(Series, "decode", boom)
    second = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
    second.load()
    assert (second.cache.misses, second.cache.hits) == (0, media)
    monkeypatch.undo()
    # a different transform setting is a different cache entry: audio decodes again, the rest does not
    third = Manifest(
        path, cache_dir=tmp_path / "cache", audio={**SMALL["audio"], "n_mels": 20}, frames=SMALL["frames"]
    )
    third.load()
    assert third.cache.misses == len(rows)
    assert third.feature_shapes["audio"] == (20,)


@pytest.mark.parametrize(
    "env, first",
    [({"RANK": "1", "WORLD_SIZE": "2"}, 1), ({"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}, 2), ({}, 0)],
)
def test_ranks_started_together_decode_their_share_first(corpus, tmp_path, monkeypatch, env, first):
    """Rank r of w decodes rows r, r+w, ... before the others (which the other ranks are decoding at
    the same time), each row once; the samples are the same as a single process reads."""
    _, path, rows = corpus
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    source = Manifest(  # the memory path's row sharing (the store's, by shard: tests/data/test_store.py)
        path, cache_dir=tmp_path / "cache", decode_threads=1, storage="memory", **SMALL
    )  # one thread: a strict order
    calls, sample = [], source._sample
    source._sample = lambda row, labeled=True: calls.append(row["id"]) or sample(row, labeled)
    source.load()
    ids = [r["id"] for r in rows]
    world = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", 1)))
    share = ids[first::world]
    assert calls[: len(share)] == share and sorted(calls) == sorted(ids)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    alone = _by_id(Manifest(path, cache_dir=tmp_path / "cache2", **SMALL))
    assert [s.id for s in source.split("train")] == [s.id for s in Manifest(path, **SMALL).split("train")]
    for sid, s in _by_id(source).items():
        for m, a in s.modalities.items():
            np.testing.assert_array_equal(a, alone[sid].modalities[m])


def test_threads_decode_the_same_samples_each_file_once(corpus, tmp_path):
    _, path, rows = corpus
    # the memory path's threads and .npz cache (the store's processes: tests/data/test_store.py)
    one = Manifest(path, cache_dir=tmp_path / "one", decode_threads=1, storage="memory", **SMALL)
    many = Manifest(path, cache_dir=tmp_path / "many", decode_threads=5, storage="memory", **SMALL)
    for split in SPLITS:  # the same samples in the same order
        assert [s.id for s in many.split(split)] == [s.id for s in one.split(split)]
    reference = _by_id(one)
    for sid, s in _by_id(many).items():
        assert s.target == reference[sid].target
        for m, a in s.modalities.items():
            np.testing.assert_array_equal(a, reference[sid].modalities[m])
    assert (many.cache.misses, many.cache.hits) == (3 * len(rows), 0)  # counted exactly across threads
    assert len(list((tmp_path / "many").rglob("*.npz"))) == 3 * len(rows)  # no temporary file left behind
    with pytest.raises(
        DataError, match=r"data\.source\.decode_threads must be null or an integer >= 1, got 0"
    ):
        Manifest(path, decode_threads=0)


def test_a_progress_bar_shows_on_a_terminal_when_decoding_is_slow(corpus, tmp_path, monkeypatch, capsys):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    _, path, rows = corpus
    # one decoding process: with one per core, a many-core CI machine finished the 12 rows within the
    # bar's 1 s delay and the test failed there only
    source = Manifest(path, cache_dir=tmp_path / "cache", decode_threads=1, decode_processes=1, **SMALL)
    sample = source._sample
    source._sample = lambda row, labeled=True: time.sleep(0.15) or sample(row, labeled)  # 12 rows: 1.8 s
    monkeypatch.setattr(sys, "stderr", Terminal())
    source.load()
    assert f"decoding {path.name}" in sys.stderr.getvalue() and f"/{len(rows)}" in sys.stderr.getvalue()
    monkeypatch.undo()
    Manifest(path, cache_dir=tmp_path / "cache2", **SMALL).load()  # not a terminal (a log file, CI): no bar
    assert "decoding" not in capsys.readouterr().err


def test_audio_is_mixed_down_and_resampled(tmp_path):
    mono = write_wav(tmp_path / "mono.wav", 0.5, rate=8000, freq=500)
    stereo = write_wav(tmp_path / "stereo.flac", 0.5, rate=22050, channels=2, freq=500)
    ogg = write_wav(tmp_path / "clip.ogg", 0.5, rate=16000, freq=500, fmt="OGG")
    rows = [
        {"id": p.stem, "label": "a", "audio": p.name, "split": s}
        for p, s in zip((mono, stereo, ogg), SPLITS, strict=True)
    ]
    source = Manifest(write_manifest(tmp_path / "m.csv", rows), **SMALL)
    a, b, c = (_by_id(source)[k].modalities["audio"] for k in ("mono", "stereo", "clip"))
    assert a.shape == b.shape == c.shape == (32, 40)  # 0.5 s at 8 kHz, hop 128, centred frames
    # the same tone at any rate and channel count gives nearly the same spectrum
    assert np.argmax(a.mean(0)) == np.argmax(b.mean(0)) == np.argmax(c.mean(0))


def test_frames_from_a_folder_or_a_list(tmp_path):
    for t in range(3):
        write_png(tmp_path / "clip" / f"{t:02d}.png", size=20, value=t / 4)
    write_png(tmp_path / "x.jpg", size=10, value=0.5)
    rows = [
        {"id": "folder", "label": "a", "frames": "clip", "split": "train"},
        {"id": "list", "label": "a", "frames": ["clip/02.png", "x.jpg"], "split": "val"},
        {"id": "gray", "label": "a", "frames": "clip/01.png;clip/00.png", "split": "test"},
    ]
    source = Manifest(
        write_manifest(tmp_path / "m.jsonl", rows), frames={"height": 6, "width": 5, "channels": 1}
    )
    samples = _by_id(source)
    folder = samples["folder"].modalities["frames"]
    assert folder.shape == (3, 1, 6, 5) and folder.dtype == np.float32
    np.testing.assert_allclose(folder[:, 0, 0, 0], [0, 0.25, 0.5], atol=0.01)  # sorted by name
    assert samples["list"].modalities["frames"].shape == (2, 1, 6, 5)
    np.testing.assert_allclose(samples["gray"].modalities["frames"][:, 0, 0, 0], [0.25, 0], atol=0.01)


def test_text_vocabulary_from_training_split_or_file(tmp_path):
    assert tokenize("It's LOUD, very loud!") == ["it's", "loud", "very", "loud"]
    rows = [
        {"id": "1", "label": "a", "text": "red dog red", "split": "train"},
        {"id": "2", "label": "b", "text": "blue cat", "split": "train"},
        {"id": "3", "label": "a", "text": "red zebra", "split": "val"},
        {"id": "4", "label": "b", "text": "", "split": "test"},
    ]
    source = Manifest(write_manifest(tmp_path / "m.csv", rows))
    samples = _by_id(source)
    vocab = source.vocab["text"]
    assert vocab.tokens[:3] == ["<pad>", UNK, "red"] and "zebra" not in vocab.index  # only training words
    assert samples["3"].modalities["text"].tolist() == [vocab.index["red"], 1]
    assert samples["4"].modalities["text"] is None  # an empty cell: text absent
    assert source.vocab_sizes == {"text": 6}
    (tmp_path / "vocab.txt").write_text("zebra\nred\n")
    source = Manifest(tmp_path / "m.csv", text={"vocab_file": str(tmp_path / "vocab.txt")})
    assert _by_id(source)["3"].modalities["text"].tolist() == [3, 2]
    assert Vocabulary.build(["a a b", "b c"], min_freq=2).tokens == ["<pad>", UNK, "a", "b"]


def test_seeded_split_ignores_row_order(tmp_path):
    _, rows = make_corpus(tmp_path, n=40, splits=False, modalities=("text",))
    a = Manifest(write_manifest(tmp_path / "a.csv", rows))
    b = Manifest(write_manifest(tmp_path / "b.csv", rows[::-1]))
    for split in SPLITS:
        assert sorted(s.id for s in a.split(split)) == sorted(s.id for s in b.split(split))
    assert [len(a.split(s)) for s in SPLITS] == [32, 4, 4]
    c = Manifest(tmp_path / "a.csv", split_seed=1)
    assert {s.id for s in c.split("val")} != {s.id for s in a.split("val")}


def test_declared_columns_and_label_kinds(tmp_path):
    _, rows = make_corpus(tmp_path, n=9, task="multilabel", modalities=("series",))
    for r in rows:
        r["ecg"] = r.pop("series")
    source = Manifest(write_manifest(tmp_path / "m.csv", rows), task="multilabel", columns={"ecg": "series"})
    sample = source.split("train")[2]
    assert source.num_classes == 3 and sample.target.tolist() == [1.0, 1.0, 1.0]
    assert source.feature_shapes == {"ecg": (3,)}
    # series are standardised with the training split's statistics
    steps = np.concatenate([s.modalities["ecg"] for s in source.split("train")])
    np.testing.assert_allclose(steps.mean(0), 0, atol=1e-5)


def test_collate_puts_times_in_seq_and_task_targets(corpus, tmp_path):
    _, path, _ = corpus
    source = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
    samples = source.split("train")[:4]  # s000 (npy, no times) ... s001 (csv with a time column)
    batch = Collate(source.feature_shapes)(samples)
    series = batch.inputs["series"]
    assert series.times is not None and series.times.shape == series.data.shape[:2]
    for i, s in enumerate(samples):
        n = len(s.modalities["series"])
        expected = s.timestamps.get("series", np.arange(n))
        torch.testing.assert_close(series.times[i, :n], torch.as_tensor(expected, dtype=torch.float32))
        assert (series.times[i, n:] == 0).all()
    assert batch.inputs["audio"].times is not None  # audio frames carry their centre times
    assert batch.inputs["text"].data.dtype == torch.int64 and batch.inputs["frames"].times is None
    regression = Collate(source.feature_shapes, target_dtype=torch.float32)(samples)
    assert regression.target.dtype == torch.float32


def test_crop_cuts_long_sequences_at_the_same_relative_position():
    from gru_mm.data.collate import crop

    a, b, short = np.arange(20.0)[:, None], np.arange(40.0)[:, None], np.arange(3.0)[:, None]
    sample = Sample("x", 1, {"a": a, "b": b, "short": short, "gone": None}, {"b": np.arange(40.0) * 0.5})
    out = crop(sample, 5, 0.5)
    assert out.modalities["a"][:, 0].tolist() == [8, 9, 10, 11, 12]  # int(0.5 * 16)
    assert out.modalities["b"][:, 0].tolist() == [18, 19, 20, 21, 22]  # int(0.5 * 36): the same stretch
    assert out.timestamps["b"].tolist() == [9.0, 9.5, 10.0, 10.5, 11.0]  # the times of those steps
    assert out.modalities["short"] is short and out.modalities["gone"] is None and out.target == 1
    assert (
        crop(sample, 5, 0.0).modalities["a"][0, 0] == 0
        and crop(sample, 5, 0.9999).modalities["a"][-1, 0] == 19
    )
    assert len(sample.modalities["a"]) == 20  # the source's sample is left as it was


def test_training_batches_are_cropped_and_evaluation_batches_are_whole(corpus, tmp_path):
    _, path, _ = corpus
    source = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
    dm = SequenceDataModule(source, batch_size=4, train_crop_steps=3)
    dm.validate()
    first = list(dm.train_dataloader())
    assert max(int(b.inputs[m].lengths.max()) for b in first for m in b.inputs) == 3
    longest = max(len(s.modalities["audio"]) for s in source.split("train"))
    assert longest > 3  # something was cut
    # The windows belong to the data order (seed, epoch, batch): not to torch's generator, nor to the
    # process that reads the batch, nor to where an iteration starts.
    torch.manual_seed(123)
    again = list(dm.train_dataloader())
    dm.num_workers = 2
    with_workers = list(dm.train_dataloader())
    resumed = dm.train_dataloader()
    resumed.load_state_dict({**resumed.state_dict(), "position": 1})  # as a mid-epoch checkpoint holds it
    tail = list(resumed)
    assert len(first) == 2 and len(tail) == 1
    for x, y, z in zip(first, again, with_workers, strict=True):
        for m in x.inputs:
            assert torch.equal(x.inputs[m].data, y.inputs[m].data) and torch.equal(
                x.inputs[m].data, z.inputs[m].data
            )
    assert first[1].ids == tail[0].ids and torch.equal(
        first[1].inputs["audio"].data, tail[0].inputs["audio"].data
    )
    val = {s.id: s for s in source.split("val")}
    for batch in dm.val_dataloader():
        for i, sid in enumerate(batch.ids):
            assert int(batch.inputs["audio"].lengths[i]) == len(val[sid].modalities["audio"])


def test_datamodule_reads_nothing_until_asked(corpus, tmp_path):
    _, path, _ = corpus
    source = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
    dm = SequenceDataModule(source, batch_size=4)
    assert source._splits is None and not (tmp_path / "cache").exists()
    assert dm.validate().problems == []
    assert (
        dm.task == "multiclass"
        and dm.num_classes == 3
        and dm.vocab_sizes == {"text": source.vocab_sizes["text"]}
    )
    batch = next(iter(dm.train_dataloader()))
    assert set(batch.inputs) == {"audio", "frames", "text", "series"} and batch.target.dtype == torch.int64


def test_every_source_meets_the_protocol(tmp_path):
    from gru_mm.data.sources.avdigits import AVDigits
    from gru_mm.data.sources.features import Features

    for source in (AVDigits(cache_dir=tmp_path), Manifest(tmp_path / "m.csv"), Features(tmp_path / "f.npz")):
        # checked on the class: on Python 3.11 isinstance() would evaluate the lazy properties
        assert all(hasattr(type(source), name) for name in ("feature_shapes", "num_classes", "load", "split"))
        assert source.task in ("multiclass", "binary", "multilabel", "regression")
    assert not any(tmp_path.iterdir())  # constructing a source reads and writes nothing


def test_overfit_batches_sees_the_same_training_batches_every_epoch(corpus, tmp_path):
    import pytorch_lightning as pl

    _, path, _ = corpus
    dm = SequenceDataModule(Manifest(path, cache_dir=tmp_path / "cache", **SMALL), batch_size=2)
    dm.validate()

    def epochs(trainer):
        dm.trainer = trainer
        loader = dm.train_dataloader()
        out = []
        for epoch in range(2):
            loader.batch_sampler.set_epoch(epoch)
            out.append([b.ids for b in loader])
        return out

    plain = epochs(pl.Trainer(logger=False, enable_checkpointing=False))
    assert plain[0] != plain[1]  # normal training reshuffles each epoch
    overfit = epochs(pl.Trainer(logger=False, enable_checkpointing=False, overfit_batches=2))
    assert overfit[0] == overfit[1]  # debug=overfit: the same batches again
