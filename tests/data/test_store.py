"""The store (gru_mm.data.store): decoded once into shards, read by index, rebuilt only where the data
changed, atomic, decoded in processes, read by DataLoader workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from byod_files import make_corpus, write_png, write_wav

from gru_mm.data.datamodule import SequenceDataModule
from gru_mm.data.sources.base import SPLITS, DataError
from gru_mm.data.sources.manifest import Manifest
from gru_mm.data.store.split import StoreSplit

SMALL = {"audio": {"sample_rate": 8000, "n_fft": 256, "hop_length": 128}, "frames": {"height": 8, "width": 8}}


@pytest.fixture
def corpus(tmp_path):
    path, rows = make_corpus(tmp_path / "data", n=12)
    return path, rows


def _by_id(source):
    return {s.id: s for split in SPLITS for s in source.split(split)}


def _assert_same_samples(a, b):
    a, b = _by_id(a), _by_id(b)
    assert a.keys() == b.keys()
    for sid, s in a.items():
        assert s.target == b[sid].target and s.modalities.keys() == b[sid].modalities.keys()
        for m, array in s.modalities.items():
            if array is None:
                assert b[sid].modalities[m] is None
            else:
                assert array.dtype == b[sid].modalities[m].dtype
                np.testing.assert_array_equal(array, b[sid].modalities[m])
        assert s.timestamps.keys() == b[sid].timestamps.keys()
        for m, t in s.timestamps.items():
            np.testing.assert_array_equal(t, b[sid].timestamps[m])


def test_the_store_reads_what_memory_holds(corpus, tmp_path):
    """Every sample, array (frames kept as uint8, given back as the same float32s), time, target and
    shape equal to the in-memory path's; lengths come from the index without reading arrays."""
    path, rows = corpus
    memory = Manifest(path, cache_dir=tmp_path / "memory", storage="memory", **SMALL)
    store = Manifest(path, cache_dir=tmp_path / "cache", shard_rows=5, **SMALL)
    _assert_same_samples(store, memory)
    assert store.feature_shapes == memory.feature_shapes and store.vocab_sizes == memory.vocab_sizes
    assert store.state() == memory.state()  # series statistics learned from the same training arrays
    train = store.split("train")
    assert isinstance(train, StoreSplit) and not isinstance(memory.split("train"), StoreSplit)
    modalities = list(store.feature_shapes)
    lengths = [[0 if (a := s.modalities[m]) is None else len(a) for m in modalities] for s in train]
    np.testing.assert_array_equal(train.lengths(modalities), lengths)
    # 8-bit images are kept in 8 bits: one byte per pixel and channel, not the four of a float32
    total = sum(f.stat().st_size for f in (tmp_path / "cache" / "store").rglob("frames.bin"))
    assert total == sum(3 * 8 * 8 * (2 + i % 3) for i in range(len(rows)))


def test_a_second_run_decodes_nothing_and_a_change_decodes_only_what_it_touches(corpus, tmp_path):
    path, rows = corpus
    root = path.parent
    media = 3 * len(rows)  # audio, frames and series files per row (text is tokenised)

    def load(**settings):
        source = Manifest(path, cache_dir=tmp_path / "cache", shard_rows=4, **{**SMALL, **settings})
        source.load()
        return source

    first = load()
    assert (first.cache.misses, first.cache.hits) == (media, 0)
    second = load()
    assert (second.cache.misses, second.cache.hits) == (0, media)

    # the same file rewritten with other content of the same size: its new modification time decodes it
    wav = root / rows[0]["audio"]
    size = wav.stat().st_size
    time.sleep(0.01)
    write_wav(wav, 0.2, freq=1234)
    assert wav.stat().st_size == size
    third = load()
    assert (third.cache.misses, third.cache.hits) == (1, media - 1)
    _assert_same_samples(third, Manifest(path, storage="memory", **SMALL))  # it read the new file

    # an image replaced by one of another size with its old modification time: the size decodes it
    png = root / rows[1]["frames"] / "000.png"
    stat = png.stat()
    write_png(png, size=16, seed=99)
    os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert png.stat().st_size != stat.st_size and png.stat().st_mtime_ns == stat.st_mtime_ns
    fourth = load()
    assert (fourth.cache.misses, fourth.cache.hits) == (1, media - 1)
    _assert_same_samples(fourth, Manifest(path, storage="memory", **SMALL))

    # a decode setting: every frames value decodes again, audio and series are copied from the store
    fifth = load(frames={"height": 4, "width": 4})
    assert (fifth.cache.misses, fifth.cache.hits) == (len(rows), media - len(rows))
    assert fifth.feature_shapes["frames"] == (3, 4, 4)
    _assert_same_samples(
        fifth, Manifest(path, storage="memory", **{**SMALL, "frames": {"height": 4, "width": 4}})
    )


def test_decoding_processes_give_the_same_store_as_one(corpus, tmp_path):
    path, rows = corpus
    one = Manifest(path, cache_dir=tmp_path / "one", decode_processes=1, shard_rows=5, **SMALL)
    two = Manifest(path, cache_dir=tmp_path / "two", decode_processes=2, shard_rows=5, **SMALL)
    _assert_same_samples(two, one)
    assert (two.cache.misses, two.cache.hits) == (3 * len(rows), 0)  # counted across processes
    assert not list((tmp_path / "two").rglob(".tmp-*"))  # no temporary folder left behind
    with pytest.raises(DataError, match=r"data\.source\.decode_processes must be null or an integer >= 1"):
        Manifest(path, decode_processes=0)
    with pytest.raises(DataError, match=r"data\.storage='disk' must be one of store, memory"):
        Manifest(path, storage="disk")


def test_ranks_started_together_build_their_share_of_shards_first(corpus, tmp_path, monkeypatch):
    path, rows = corpus
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    source = Manifest(path, cache_dir=tmp_path / "cache", decode_processes=1, shard_rows=2, **SMALL)
    calls, sample = [], source._sample
    source._sample = lambda row, labeled=True: calls.append(row["id"]) or sample(row, labeled)
    source.load()
    ids = [r["id"] for r in rows]
    shards = [ids[i : i + 2] for i in range(0, len(ids), 2)]
    assert calls == sum(shards[1::2] + shards[0::2], [])  # shards 1, 3, 5 first, then 0, 2, 4


CHILD = """
import sys, time
from gru_mm.data.kinds.audio import Audio
from gru_mm.data.sources.manifest import Manifest
decode = Audio.decode
Audio.decode = lambda self, path: time.sleep(0.4) or decode(self, path)
small = {"audio": {"sample_rate": 8000, "n_fft": 256, "hop_length": 128}, "frames": {"height": 8, "width": 8}}
Manifest(sys.argv[1], cache_dir=sys.argv[2], decode_processes=1, shard_rows=2, **small).load()
"""


def test_a_build_killed_midway_leaves_nothing_trusted(corpus, tmp_path):
    """SIGKILL while building: the committed shards are whole and reused, the one being written is a
    .tmp folder nobody reads; the next run decodes exactly the rows of the shards not committed."""
    path, rows = corpus
    store = tmp_path / "cache" / "store"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(tmp_path / "cache")])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(store.glob("*/index.json"))) < 2:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    committed = [p.parent for p in store.glob("*/index.json")]
    assert 2 <= len(committed) < len(rows) // 2, "the build finished or never started: no kill midway"
    assert list(store.glob(".tmp-*"))  # the shard it was writing: a temporary folder

    resumed = Manifest(path, cache_dir=tmp_path / "cache", shard_rows=2, **SMALL)
    resumed.load()
    left = len(rows) - 2 * len(committed)
    assert (resumed.cache.misses, resumed.cache.hits) == (3 * left, 3 * 2 * len(committed))
    _assert_same_samples(resumed, Manifest(path, storage="memory", **SMALL))

    # a committed shard cut short afterwards (a full disk, a bad copy) is found out and rebuilt
    audio = committed[0] / "audio.bin"
    audio.write_bytes(audio.read_bytes()[:-10])
    again = Manifest(path, cache_dir=tmp_path / "cache", shard_rows=2, **SMALL)
    again.load()
    assert again.cache.misses == 3 * 2  # a broken shard is not read at all: its two rows decode again
    _assert_same_samples(again, Manifest(path, storage="memory", **SMALL))


def test_dataloader_workers_read_the_store(corpus, tmp_path):
    path, _ = corpus

    def batches(workers):
        source = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
        dm = SequenceDataModule(source, batch_size=3, num_workers=workers, seed=1)
        dm.validate()
        return list(dm.train_dataloader()) + list(dm.val_dataloader())

    alone, workers = batches(0), batches(2)
    assert [b.ids for b in workers] == [b.ids for b in alone] and len(alone) > 2
    for a, b in zip(alone, workers, strict=True):
        assert torch.equal(a.target, b.target)
        for m in a.inputs:
            assert torch.equal(a.inputs[m].data, b.inputs[m].data)
            assert torch.equal(a.inputs[m].lengths, b.inputs[m].lengths)


def test_fingerprint_is_known_before_decoding_and_follows_the_data(corpus, tmp_path):
    path, rows = corpus
    source = Manifest(path, cache_dir=tmp_path / "cache", **SMALL)
    dm = SequenceDataModule(source)
    digest = dm.fingerprint
    assert isinstance(digest, str) and len(digest) >= 16
    assert not (tmp_path / "cache").exists() and source._splits is None  # nothing decoded
    assert Manifest(path, storage="memory", **SMALL).fingerprint == digest  # the same data either way
    assert Manifest(path, **{**SMALL, "frames": {"height": 4, "width": 4}}).fingerprint != digest
    png = path.parent / rows[2]["frames"] / "000.png"
    os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))
    assert Manifest(path, **SMALL).fingerprint != digest


def test_features_and_avdigits_go_through_the_store(tmp_path, monkeypatch):
    """The other sources share the path: a first run writes the store, a later one reads only it (the
    features file is not opened, nothing is generated) and gets the same samples as memory."""
    from byod_files import write_mosi_pickle

    from gru_mm.data.sources.avdigits import AVDigits
    from gru_mm.data.sources.features import Features

    path = write_mosi_pickle(tmp_path / "mosi.pkl", aligned=False)
    settings = {"trust_pickle": True, "cache_dir": tmp_path / "cache"}
    memory = Features(path, storage="memory", **settings)
    Features(path, **settings).load()
    monkeypatch.setattr(Features, "_read", lambda *a, **k: pytest.fail("the features file was read again"))
    stored = Features(path, **settings)
    assert isinstance(stored.split("train"), StoreSplit)
    assert stored.fingerprint == memory.fingerprint
    monkeypatch.undo()
    _assert_same_samples(stored, memory)
    assert stored.feature_shapes == memory.feature_shapes and stored.num_classes == memory.num_classes

    small = {"n_train": 12, "n_val": 4, "n_test": 4, "max_frames": 6}
    generated = AVDigits(tmp_path / "avdigits", storage="memory", **small)
    AVDigits(tmp_path / "avdigits", **small).load()
    monkeypatch.setattr(AVDigits, "_samples", lambda self: pytest.fail("generated again"))
    stored = AVDigits(tmp_path / "avdigits", **small)
    assert isinstance(stored.split("train"), StoreSplit)
    monkeypatch.undo()
    _assert_same_samples(stored, generated)
    assert not list((tmp_path / "avdigits").glob(".tmp-*"))


def test_each_rank_reads_only_the_samples_of_its_own_batches(corpus, tmp_path, monkeypatch):
    """Under DDP every rank indexes the store with its own batches: no rank loads the split."""
    from torch.utils.data import DataLoader

    from gru_mm.data.collate import Collate
    from gru_mm.data.datamodule import split_lengths
    from gru_mm.data.sampler import LengthBucketBatchSampler
    from gru_mm.data.store.shard import ShardReader

    path, _ = corpus
    source = Manifest(path, cache_dir=tmp_path / "cache", shard_rows=3, **SMALL)
    train = source.split("train")
    read, real_read = [], ShardReader.read
    monkeypatch.setattr(
        ShardReader,
        "read",
        lambda self, column, j: read.append((self.path, int(j))) or real_read(self, column, j),
    )
    lengths = split_lengths(train, source.feature_shapes)
    for rank in (0, 1):
        sampler = LengthBucketBatchSampler(lengths, 2, seed=3, num_replicas=2, rank=rank)
        read.clear()
        ids = [
            i
            for b in DataLoader(train, batch_sampler=sampler, collate_fn=Collate(source.feature_shapes))
            for i in b.ids
        ]
        mine = {
            (train.shards[s].path, int(j)) for s, j in train.places[[i for batch in sampler for i in batch]]
        }
        assert set(read) == mine and len(mine) == len(ids) < len(train)  # its half, and nothing else
