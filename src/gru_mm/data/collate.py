"""One collate function for every modality: samples -> `Batch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gru_mm.data.batch import Batch, Sample, pad_sequences


class Collate:
    """Pads each modality to the batch's longest sequence; absent modalities get length 0.

    feature_shapes names every modality the model expects, so a batch where all samples
    lack one still has a (zero-length) entry for it. Step times (`Sample.timestamps`) become
    `Seq.times` when any sample of the batch has them; a present sample without them gets its
    step indices, padding gets zeros.
    """

    def __init__(
        self,
        feature_shapes: Mapping[str, Sequence[int]],
        target_dtype: torch.dtype = torch.int64,
        pack: bool = False,
    ):
        self.feature_shapes = {m: tuple(shape) for m, shape in feature_shapes.items()}
        self.target_dtype = target_dtype
        # batches bound for a GPU: one buffer per batch (`Batch.packed`), pinned and moved in one copy
        self.pack = pack

    def packing(self) -> Collate:
        """The same collate, packing each batch into one buffer."""
        return Collate(self.feature_shapes, self.target_dtype, pack=True)

    def __call__(self, samples: list[Sample]) -> Batch:
        inputs = {}
        for m, shape in self.feature_shapes.items():
            arrays = [s.modalities.get(m) for s in samples]
            seq = pad_sequences(arrays, shape)
            if any(m in s.timestamps for s in samples):
                times = torch.zeros(seq.data.shape[:2], dtype=torch.float32)
                for i, (s, a) in enumerate(zip(samples, arrays, strict=True)):
                    if a is not None and len(a):
                        t = s.timestamps.get(m)
                        times[i, : len(a)] = torch.as_tensor(np.arange(len(a)) if t is None else t[: len(a)])
                seq.times = times
            inputs[m] = seq
        target = torch.as_tensor(np.asarray([s.target for s in samples]), dtype=self.target_dtype)
        batch = Batch([s.id for s in samples], target, inputs)
        return batch.packed() if self.pack else batch


class Cropped(Dataset):
    """A split read by (index, u) keys, as `LengthBucketBatchSampler(draws=True)` yields them: each
    sample cut to `steps` at relative position u (`crop`). Training only; the draws belong to the data
    order, so a resumed run and any number of loader workers cut every sample as the first run did."""

    def __init__(self, samples: Sequence[Sample], steps: int):
        self.samples, self.steps = samples, steps

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, float]) -> Sample:
        index, u = key
        return crop(self.samples[index], self.steps, u)


def crop(sample: Sample, steps: int, position: float) -> Sample:
    """The sample with every modality longer than `steps` cut to `steps` consecutive steps (and their
    times), starting at the same relative `position` (0..1) of each, so that modalities of similar
    duration keep covering about the same stretch of time."""
    modalities, times = dict(sample.modalities), dict(sample.timestamps)
    for m, a in sample.modalities.items():
        if a is not None and len(a) > steps:
            start = min(int(position * (len(a) - steps + 1)), len(a) - steps)
            modalities[m] = a[start : start + steps]
            if m in times:
                times[m] = times[m][start : start + steps]
    return Sample(sample.id, sample.target, modalities, times)
