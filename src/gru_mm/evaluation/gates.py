"""The GRU gates of the first test samples, for models that run a GRU per modality."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gru_mm.data.batch import Batch
from gru_mm.evaluation.mode import eval_mode

GATE_SAMPLES = 3  # test samples shown per modality


@torch.no_grad()
def first_gates(
    module, batches: Iterable[Batch], samples: int = GATE_SAMPLES
) -> dict[str, tuple[dict, list[str]]]:
    """{modality: (gates, ids)} of the first batch's first `samples` samples that have the modality,
    with gates as `MultimodalGRU.gates` gives them ("z", "r", "lengths", "cell"). {} when the model has
    no gates."""
    net = getattr(module, "net", None)
    if net is None or not net.has_gates():
        return {}
    batch = next(iter(batches))
    device = next(module.parameters()).device
    with eval_mode(module):
        gates = net.gates(batch.to(device).inputs)
    picked = {}
    for m, g in gates.items():
        keep = [i for i in range(len(batch.ids)) if int(g["lengths"][i]) > 0][:samples]
        if keep:
            picked[m] = (
                {
                    "z": g["z"][:, keep],
                    "r": g["r"][:, keep],
                    "lengths": g["lengths"][keep],
                    "cell": g["cell"],
                },
                [batch.ids[i] for i in keep],
            )
    return picked
