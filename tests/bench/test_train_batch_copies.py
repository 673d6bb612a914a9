"""`gru-mm-bench train`'s batch copies: one per packed batch, counted toward the device trained on."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from gru_mm.bench.train import batch_copies
from gru_mm.data.batch import Sample
from gru_mm.data.collate import Collate
from gru_mm.models.module import SequenceClassifier

SHAPES = {"audio": (3,), "video": (2,)}


def samples(n: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [
        Sample(
            f"s{i}",
            i % 2,
            {"audio": rng.random((5 + i, 3), "float32"), "video": rng.random((4, 2), "float32")},
        )
        for i in range(n)
    ]


def test_a_packed_batch_moves_in_one_copy_to_the_target_device_whatever_device_the_module_is_on():
    # after fit, Lightning leaves the module on the CPU: the count must not depend on module.device
    module = SequenceClassifier(nn.Linear(1, 2), num_classes=2, optimizer=torch.optim.AdamW)
    assert module.device.type == "cpu"
    data = samples(6)
    packed = DataLoader(data, batch_size=4, collate_fn=Collate(SHAPES, pack=True))
    plain = DataLoader(data, batch_size=4, collate_fn=Collate(SHAPES))
    # "meta": a device other than the CPU that a machine without a GPU has (the move is a real _to_copy)
    assert batch_copies(module, packed, data, 4, "meta") == 1
    assert batch_copies(module, plain, data, 4, "meta") == 5  # target, and each modality's data and present
    assert batch_copies(module, packed, data, 4, "cpu") == 0  # what the bench counted before: no move at all
