"""Augmenting a collated `Batch`: each modality's transform on each sample's real steps, seeded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from gru_mm.data.batch import Batch, Seq


def augment_real_steps(transform: nn.Module, seq: Seq, reseed: Callable[[int], None] | None = None) -> Seq:
    """`transform` applied to each sample's steps [:length] one sample at a time (after `reseed(i)`);
    padded steps are neither read nor written, and no draw depends on how long the batch is padded."""
    data = seq.data.clone()
    for i, length in enumerate(seq.lengths.tolist()):  # lengths live on the CPU: no device sync
        if length > 0:
            if reseed is not None:
                reseed(i)
            data[i, :length] = transform(seq.data[i, :length])
    return seq.with_data(data)


class BatchAugment:
    """The training batches' augmentation: {modality: transform of one sequence} and a generator.

    torchaudio's and torchvision's transforms draw from torch's global generators and take no generator of
    their own. So each batch draws one seed from this object's generator (seeded from the run's seed), and
    the transforms run inside `torch.random.fork_rng` with the global generators (CPU, and the batch's GPU)
    reseeded for each sample and modality from (that seed, salt, modality, position): the same seed gives
    the same augmentations, a sample's draws do not depend on the other samples of its batch, and the run's
    other random numbers (dropout, modality dropout, crops) are left exactly as they were. One draw per
    batch whatever it holds, so the generator's state (`state_dict`, saved with checkpoints) says how many
    batches it has seen.
    """

    def __init__(self, transforms: Mapping[str, nn.Module], seed: int):
        self.transforms = dict(transforms)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __repr__(self) -> str:
        return f"BatchAugment({', '.join(f'{m}={t}' for m, t in self.transforms.items())})"

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    @torch.no_grad()
    def __call__(self, batch: Batch, salt: int = 0) -> Batch:
        """The batch with its modalities augmented; `salt` (a DDP rank) gives each process its own draws."""
        seed = int(torch.randint(0, 2**62, (), generator=self.generator)) + int(salt) * 2**62
        inputs = dict(batch.inputs)
        wanted = [(j, m) for j, m in enumerate(self.transforms) if m in inputs]
        if not wanted:
            return batch
        device = inputs[wanted[0][1]].data.device
        cuda = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else []
        )

        def reseed(*key: int) -> None:
            # a tuple of ints hashes the same in every process (only str hashes are randomised)
            sample_seed = hash((seed, *key)) & (2**63 - 1)
            torch.default_generator.manual_seed(sample_seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(sample_seed)

        with torch.random.fork_rng(devices=cuda):
            for j, m in wanted:
                inputs[m] = augment_real_steps(self.transforms[m], inputs[m], lambda i, j=j: reseed(j, i))
        return dataclasses.replace(batch, inputs=inputs)
