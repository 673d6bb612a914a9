"""One collate function for every modality: samples -> `Batch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from gru_mm.data.batch import Batch, Sample, pad_sequences


class Collate:
    """Pads each modality to the batch's longest sequence; absent modalities get length 0.

    feature_shapes names every modality the model expects, so a batch where all samples
    lack one still has a (zero-length) entry for it.
    """

    def __init__(self, feature_shapes: Mapping[str, Sequence[int]], target_dtype: torch.dtype = torch.int64):
        self.feature_shapes = {m: tuple(shape) for m, shape in feature_shapes.items()}
        self.target_dtype = target_dtype

    def __call__(self, samples: list[Sample]) -> Batch:
        inputs = {
            m: pad_sequences([s.modalities.get(m) for s in samples], shape) for m, shape in self.feature_shapes.items()
        }
        target = torch.as_tensor([s.target for s in samples], dtype=self.target_dtype)
        return Batch([s.id for s in samples], target, inputs)
