"""A multimodal GRU model assembled from parts: encoder per modality -> (GRU per modality) -> fusion
-> head."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gru_mm.config import ConfigError
from gru_mm.data.batch import Seq
from gru_mm.models.balance import GradientModulation, UnimodalHeads
from gru_mm.nn.encoders import Encoder
from gru_mm.nn.fusion import STATES, STEPS, FusionInput
from gru_mm.nn.fusion_steps import final_state, gru_state_size


def fusion_consumes(factory: Callable[..., nn.Module]) -> str:
    """What a fusion class (or a `_partial_` of one) consumes: "states" or "steps"."""
    target = factory
    while isinstance(target, functools.partial):
        target = target.func
    consumes = getattr(target, "consumes", STATES)
    if consumes not in (STATES, STEPS):
        raise ValueError(f"{getattr(target, '__name__', target)}.consumes must be {STATES!r} or {STEPS!r}")
    return consumes


def set_absent(seq: Seq, absent: Tensor, absent_on_device: Tensor | None = None) -> Seq:
    """The same batch with the samples where `absent` ([B] bool, CPU) is True lacking this modality.
    `absent_on_device`: the same flags already on the data's device (saves a host-to-device copy)."""
    keep = ~absent
    on_device = keep.to(seq.data.device) if absent_on_device is None else ~absent_on_device
    data = seq.data * on_device.to(seq.data.device).view(-1, *([1] * (seq.data.dim() - 1))).to(seq.data.dtype)
    times = seq.times
    if times is not None:
        times = times * on_device.to(times.device)[:, None].to(times.dtype)
    return Seq(data, seq.lengths * keep, seq.present & on_device.to(seq.present.device), times)


def modality_dropout_mask(present: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """[B, M] bool: which present modalities to drop, each with probability p, never all of a sample's.

    Where the draw would drop every present modality of a sample, one of them (chosen at random) is kept.
    """
    drop = (torch.rand(present.shape, generator=generator) < p) & present
    all_gone = present.any(dim=1) & ~(present & ~drop).any(dim=1)
    if all_gone.any():
        # keep the present modality with the highest random score
        scores = torch.rand(present.shape, generator=generator).masked_fill(~present, -1.0)
        keep = torch.zeros_like(drop).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        drop &= ~(keep & all_gone[:, None])
    return drop


@dataclass
class ModelParts:
    """One forward pass of `MultimodalGRU`, opened up: the fused prediction, what the fusion consumed, and
    each modality's own head's prediction."""

    logits: Tensor
    fused: dict[str, FusionInput]
    unimodal: dict[str, Tensor]


class MultimodalGRU(nn.Module):
    """encoders[m](Seq) -> [grus[m]] -> fusion({m: FusionInput}) -> head.

    gru, fusion and head are factories (Hydra `_partial_` configs) because their sizes follow from
    the encoders'. A fusion that consumes "states" gets each modality's GRU outputs and final state;
    one that consumes "steps" gets the encoder outputs and builds its own GRU from the same `gru`
    factory. Either way, a sample lacking a modality gets that modality's learned stand-in
    (`absent[m]`), and in training each present modality is dropped with probability
    `modality_dropout` (never all of a sample's), so the model learns to cope without it.

    Each modality also has a small head of its own (`unimodal_heads`, see `gru_mm.models.balance`): an
    auxiliary loss when its weight is > 0, else a probe that only measures. `ogm_ge` switches on OGM-GE
    gradient modulation (fusions with a GRU per modality); the LightningModule applies it after backward.
    `compile` runs the encoders and the head through `torch.compile` (`compile_parts`).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        gru: Callable[..., nn.Module],
        fusion: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        num_classes: int,
        modalities: list[str] | None = None,
        modality_dropout: float = 0.0,
        unimodal_heads: Mapping[str, Any] | None = None,
        ogm_ge: Mapping[str, Any] | None = None,
        compile: bool = False,
    ):
        super().__init__()
        if not encoders:
            raise ValueError("model.encoders is empty: give at least one modality's encoder")
        unknown = sorted(set(modalities or []) - set(encoders))
        if unknown:
            raise ValueError(f"model.modalities names {unknown}, which have no encoder in model.encoders")
        if not 0.0 <= float(modality_dropout) < 1.0:
            raise ValueError(f"model.modality_dropout must lie in [0, 1), got {modality_dropout!r}")
        # `modalities` picks a subset of the configured encoders (single-modality baselines, ablations).
        self.modalities = sorted(modalities or encoders)
        self.modality_dropout = float(modality_dropout)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.consumes = fusion_consumes(fusion)
        if self.consumes == STATES:
            self.grus = nn.ModuleDict(
                {m: gru(input_size=self.encoders[m].out_features) for m in self.modalities}
            )
            dims = {m: gru_state_size(self.grus[m]) for m in self.modalities}
            self.fusion = fusion(input_dims=dims)
        else:
            self.grus = nn.ModuleDict()
            dims = {m: self.encoders[m].out_features for m in self.modalities}
            self.fusion = fusion(input_dims=dims, gru=gru)
        # The learned stand-in for a modality a sample lacks, in the space the fusion consumes.
        self.absent = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.1) for m, d in dims.items()})
        self.head = head(in_features=self.fusion.out_features, out_features=num_classes)
        self.unimodal = UnimodalHeads(dims, num_classes, **dict(unimodal_heads or {}))
        ogm_ge = dict(ogm_ge or {})
        self.ogm_ge = GradientModulation(**ogm_ge) if ogm_ge.pop("enabled", False) else None
        if self.ogm_ge is not None and self.consumes != STATES:
            raise ConfigError(
                "model.ogm_ge needs a fusion with a GRU per modality (late, attention, tensor, lmf); "
                "early and event fusions share one GRU across modalities"
            )
        if compile:
            self.compile_parts()

    def compile_parts(self) -> list[str]:
        """`torch.compile` the encoders and the head in place (`nn.Module.compile`: state dict keys stay as
        they are, so checkpoints load either way); the GRUs stay eager, since packed sequences and cuDNN's
        RNN cannot be traced and gru_mm's layer has CUDA graphs of its own. Returns what was compiled."""
        parts = {f"encoders.{m}": e for m, e in self.encoders.items()} | {"head": self.head}
        for part in parts.values():
            # dynamic: bucketed batches differ in length (and the last in size) every step; static shapes
            # would recompile for the first few of them
            part.compile(dynamic=True)
        return list(parts)

    def drop_modalities(self, inputs: Mapping[str, Seq]) -> dict[str, Seq]:
        """Modality dropout: each present modality of each sample set absent with probability p."""
        present = torch.stack([inputs[m].lengths > 0 for m in self.modalities], dim=1)  # CPU
        drop = modality_dropout_mask(present, self.modality_dropout)
        on_device = drop.to(inputs[self.modalities[0]].data.device)  # one copy for every modality
        return {m: set_absent(inputs[m], drop[:, i], on_device[:, i]) for i, m in enumerate(self.modalities)}

    def fusion_inputs(self, inputs: Mapping[str, Seq]) -> dict[str, FusionInput]:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise ValueError(f"batch lacks modalities {missing}; the model expects {self.modalities}")
        if self.training and self.modality_dropout > 0:
            inputs = self.drop_modalities(inputs)
        out = {}
        for m in self.modalities:
            seq = inputs[m]
            x, lengths = self.encoders[m](seq.data, seq.lengths)
            positive = lengths > 0  # the encoder may shorten a sequence to nothing
            if positive.device.type != "cpu" or not bool(positive.all()):  # (all: no copy to the device)
                present = seq.present & positive.to(seq.present.device)
            else:
                present = seq.present
            times = self._encoded_times(m, seq, x.shape[1])
            if self.consumes == STEPS:
                out[m] = FusionInput(x, lengths, present, self.absent[m], times=times)
                continue
            steps, h_n = self.grus[m](x, lengths)
            state = final_state(self.grus[m], h_n)
            state = torch.where(present[:, None], state, self.absent[m].to(state.dtype))
            out[m] = FusionInput(steps, lengths, present, self.absent[m], state=state, times=times)
        return out

    def _encoded_times(self, m: str, seq: Seq, steps: int) -> Tensor | None:
        """The data's step times, following the encoder when it shortens the sequence by a stride."""
        if seq.times is None:
            return None
        if seq.times.shape[1] == steps:
            return seq.times
        encoder = self.encoders[m]
        stride = encoder.time_stride if isinstance(encoder, Encoder) else None  # a plain module declares none
        if stride is not None and seq.times[:, ::stride].shape[1] == steps:
            return seq.times[:, ::stride]  # encoded step i starts at input step i * stride
        return None  # unknown mapping: the fusion falls back to its configured step durations

    def forward(self, inputs: Mapping[str, Seq]) -> Tensor:
        return self.head(self.fusion(self.fusion_inputs(inputs)))

    def forward_parts(self, inputs: Mapping[str, Seq]) -> ModelParts:
        """The fused prediction with the fusion's inputs and each modality's own head's prediction."""
        fused = self.fusion_inputs(inputs)
        return ModelParts(self.head(self.fusion(fused)), fused, self.unimodal(fused))

    def logits_with_only(self, fused: Mapping[str, FusionInput], keep: str) -> Tensor:
        """The fused head's prediction from `keep` alone: every other modality takes its absent stand-in."""
        if self.consumes != STATES:
            raise ValueError("logits_with_only needs a fusion with a GRU per modality (not early or event)")
        alone = {}
        for m, x in fused.items():
            if m == keep:
                alone[m] = x
                continue
            stand_in = x.absent.to(x.state.dtype).expand(x.state.shape[0], -1)
            alone[m] = FusionInput(
                x.steps,
                torch.zeros_like(x.lengths),
                torch.zeros_like(x.present),
                x.absent,
                state=stand_in,
                times=x.times,
            )
        return self.head(self.fusion(alone))

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Each modality's own parameters: its encoder's and, where it has one, its GRU's."""
        return {
            m: [*self.encoders[m].parameters(), *(self.grus[m].parameters() if m in self.grus else [])]
            for m in self.modalities
        }

    def has_gates(self) -> bool:
        """Whether `gates` can show this model's gates: a fusion that runs a GRU per modality."""
        return bool(self.grus) and all(hasattr(g, "gates") for g in self.grus.values())

    @torch.no_grad()
    def gates(self, inputs: Mapping[str, Seq]) -> dict[str, dict[str, Tensor]]:
        """Per modality, the GRU's update and reset gates over this batch (for interpretability):
        {"z": ..., "r": ... each [num_layers*D, B, T, H], zeros at padding; "lengths": [B];
        "cell": the GRU's cell, which says what z means}. Needs a fusion of per-modality GRUs."""
        if not self.has_gates():
            raise ValueError("gates need a fusion that runs a GRU per modality (not early or event)")
        out = {}
        for m in self.modalities:
            seq = inputs[m]
            x, lengths = self.encoders[m](seq.data, seq.lengths)
            out[m] = {**self.grus[m].gates(x, lengths), "lengths": lengths, "cell": self.grus[m].cell}
        return out
