"""One host-to-device copy per batch (issue 14): packed batches move as one buffer, through the DataLoader's
worker processes and Lightning's transfer hook, with the same values and lengths left on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gru_mm.bench.train import CopyCounter
from gru_mm.data.batch import Batch, Sample, Seq
from gru_mm.data.collate import Collate
from gru_mm.data.datamodule import SequenceDataModule
from gru_mm.data.transfer import ALIGN
from gru_mm.models.module import SequenceClassifier

SHAPES = {"audio": (3,), "video": (2, 2)}


def samples(n: int = 5) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        video = None if i == 1 else rng.normal(size=(i + 2, 2, 2)).astype(np.float32)
        out.append(
            Sample(f"s{i}", i % 3, {"audio": rng.normal(size=(i + 1, 3)).astype(np.float32), "video": video})
        )
    return out


def moved_copies(batch: Batch, move) -> tuple[Batch, int]:
    with CopyCounter() as counter:
        moved = move(batch)
    return moved, counter.copies


def assert_same(a: Batch, b: Batch) -> None:
    assert a.ids == b.ids and torch.equal(a.target, b.target) and a.target.dtype == b.target.dtype
    for m in a.inputs:
        x, y = a.inputs[m], b.inputs[m]
        assert torch.equal(x.data, y.data) and torch.equal(x.present, y.present)
        assert torch.equal(x.lengths, y.lengths) and y.lengths.device.type == "cpu"


def test_packed_batch_holds_the_same_values_in_one_aligned_buffer():
    plain = Collate(SHAPES)(samples())
    packed = Collate(SHAPES, pack=True)(samples())
    assert plain.flat is None and packed.flat is not None
    assert_same(plain, packed)
    ptr = packed.flat.untyped_storage().data_ptr()
    for t in packed._tensors():
        assert t.untyped_storage().data_ptr() == ptr
        assert (t.storage_offset() * t.element_size()) % ALIGN == 0
    # lengths are not in the buffer: they stay CPU tensors of their own
    assert packed.inputs["audio"].lengths.untyped_storage().data_ptr() != ptr


def test_lightning_transfer_hook_moves_a_packed_batch_in_one_copy():
    module = SequenceClassifier(torch.nn.Linear(1, 1), num_classes=3, optimizer=torch.optim.SGD)
    hook = lambda b: module.transfer_batch_to_device(b, torch.device("meta"), 0)  # noqa: E731
    plain, copies_plain = moved_copies(Collate(SHAPES)(samples()), hook)
    packed, copies_packed = moved_copies(Collate(SHAPES, pack=True)(samples()), hook)
    assert copies_plain == 5  # target, and data + present per modality, one by one
    assert copies_packed == 1
    for b in (plain, packed):
        assert b.target.device.type == "meta" and b.inputs["video"].data.device.type == "meta"
        assert b.inputs["video"].data.shape == (5, 6, 2, 2) and b.inputs["video"].present.dtype == torch.bool
        assert b.inputs["video"].lengths.device.type == "cpu"  # design rule: lengths stay on the CPU
    assert packed.inputs["audio"].data.shape == plain.inputs["audio"].data.shape


def test_batches_from_worker_processes_still_move_in_one_copy():
    loader = DataLoader(samples(8), batch_size=4, collate_fn=Collate(SHAPES, pack=True), num_workers=1)
    batches = list(loader)
    expected = [Collate(SHAPES)(samples(8)[i : i + 4]) for i in (0, 4)]
    for got, want in zip(batches, expected, strict=True):
        assert_same(want, got)
        moved, copies = moved_copies(got, lambda b: b.to("meta", non_blocking=True))
        assert copies == 1 and moved.inputs["audio"].data.device.type == "meta"


def test_a_tensor_replaced_after_packing_is_moved_too():
    packed = Collate(SHAPES, pack=True)(samples())
    audio = packed.inputs["audio"]
    packed.inputs["audio"] = Seq(audio.data * 2, audio.lengths, audio.present)  # e.g. a transform on the CPU
    moved, copies = moved_copies(packed, lambda b: b.to("meta"))
    assert copies == 5  # the buffer no longer holds the batch: the tensors one by one
    assert torch.equal(packed.to("cpu").inputs["audio"].data, audio.data * 2)


@pytest.mark.parametrize("workers", [None, 0, 2])
def test_loaders_on_the_cpu_neither_pin_nor_pack(workers):
    from types import SimpleNamespace

    class Source:
        feature_shapes = SHAPES
        task = "multiclass"

        def split(self, name):
            return samples(6)

    dm = SequenceDataModule(Source(), batch_size=3, num_workers=workers, persistent_workers=True)
    loader = dm._loader("train", shuffle=False, batch_size=3)
    assert dm.loader_workers() == (workers or 0)
    assert loader.num_workers == (workers or 0) and not loader.pin_memory
    assert loader.persistent_workers == bool(workers)
    assert not loader.collate_fn.pack
    # on a GPU (a trainer whose device is CUDA): packed, pinned, and with null workers up to 4
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cuda")),
        num_devices=1,
        world_size=1,
        global_rank=0,
        overfit_batches=0,
    )
    gpu = dm._loader("train", shuffle=False, batch_size=3)
    assert gpu.collate_fn.pack and gpu.pin_memory
    if workers is None:
        assert 0 <= gpu.num_workers <= 4
