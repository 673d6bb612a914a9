"""Fusions that consume encoded steps and run one fusion GRU: early (one timeline) and event (by time)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from gru_mm.nn.fusion import STEPS, FusionInput
from gru_mm.nn.masks import step_mask


def gru_state_size(gru: nn.Module) -> int:
    return gru.hidden_size * (2 if gru.bidirectional else 1)


def final_state(gru: nn.Module, h_n: Tensor) -> Tensor:
    """The last layer's final state(s): [L*D, B, H] -> [B, D*H]."""
    d = 2 if gru.bidirectional else 1
    return h_n[-d:].transpose(0, 1).reshape(h_n.shape[1], -1)


def fill_absent(x: FusionInput) -> tuple[Tensor, Tensor, Tensor | None]:
    """(steps, lengths, times) where a sample lacking the modality has one step: its learned stand-in,
    at time 0."""
    empty = x.lengths == 0  # CPU
    if not bool(empty.any()):
        return x.steps, x.lengths, x.times
    steps, times = x.steps, x.times
    if steps.shape[1] == 0:  # the whole batch lacks it
        steps = steps.new_zeros(steps.shape[0], 1, steps.shape[2])
        times = None if times is None else times.new_zeros(times.shape[0], 1)
    first = torch.where(empty.to(steps.device)[:, None], x.absent.to(steps.dtype), steps[:, 0])
    steps = torch.cat([first[:, None], steps[:, 1:]], dim=1)
    if times is not None:
        times = torch.cat(
            [times[:, :1].masked_fill(empty.to(times.device)[:, None], 0.0), times[:, 1:]], dim=1
        )
    return steps, x.lengths.clamp(min=1), times


def resample(steps: Tensor, lengths: Tensor, target: Tensor, T: int) -> Tensor:  # noqa: N803 (T is time)
    """Linear interpolation of each row's first lengths[b] steps onto target[b] steps (zeros after).

    Steps are treated as cells covering the same span (like `interpolate(align_corners=False)`), so
    each sequence is stretched or squeezed to the common timeline. Indices and weights are built on
    the CPU from the lengths and depend on nothing but the row's own lengths: padding cannot matter.
    """
    src = lengths.clamp(min=1).to(torch.float64)[:, None]
    j = torch.arange(T, dtype=torch.float64)[None, :]
    pos = ((j + 0.5) * src / target.clamp(min=1).to(torch.float64)[:, None] - 0.5).clamp(min=0.0)
    pos = torch.minimum(pos, src - 1)
    i0 = pos.floor().long()
    i1 = torch.minimum(i0 + 1, (src - 1).long())
    w = (pos - i0).to(steps.dtype)
    valid = (j < target[:, None]).to(steps.dtype)
    dev = steps.device
    feat = steps.shape[2]
    g0 = steps.gather(1, i0.to(dev)[..., None].expand(-1, -1, feat))
    g1 = steps.gather(1, i1.to(dev)[..., None].expand(-1, -1, feat))
    w, valid = w.to(dev)[..., None], valid.to(dev)[..., None]
    return (g0 * (1 - w) + g1 * w) * valid


class EarlyFusion(nn.Module):
    """Every modality resampled onto one timeline per sample, concatenated per step, one fusion GRU.

    The timeline has `num_steps` steps, or (null) as many as the sample's longest present modality.
    A modality the sample lacks contributes its learned stand-in at every step.
    """

    consumes = STEPS

    def __init__(
        self, input_dims: Mapping[str, int], gru: Callable[..., nn.Module], num_steps: int | None = None
    ):
        super().__init__()
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"early fusion num_steps must be >= 1 or null, got {num_steps}")
        self.modalities = sorted(input_dims)
        self.num_steps = num_steps
        self.gru = gru(input_size=sum(input_dims.values()))
        self.out_features = gru_state_size(self.gru)

    def forward(self, inputs: dict[str, FusionInput]) -> Tensor:
        longest = torch.stack([inputs[m].lengths for m in self.modalities]).amax(dim=0).clamp(min=1)
        target = longest if self.num_steps is None else torch.full_like(longest, self.num_steps)
        T = int(target.max())  # noqa: N806 (T is time); lengths live on the CPU: no device sync
        parts = []
        for m in self.modalities:
            steps, lengths, _ = fill_absent(inputs[m])
            parts.append(resample(steps, lengths, target, T))
        _, h_n = self.gru(torch.cat(parts, dim=-1), target)
        return final_state(self.gru, h_n)


class EventFusion(nn.Module):
    """All modalities' steps merged into one sequence per sample, ordered by time, one fusion GRU.

    Each step becomes an event: its features projected to `dim` plus a learned modality embedding,
    and the gap to the previous event (seconds, and log1p of milliseconds) as two more features.
    Times come from the data (`FusionInput.times`) where it has them, else step index x
    `step_seconds[modality]`. Ties keep modality order (sorted names), then step order. A modality
    the sample lacks contributes one event at time 0: its learned stand-in.
    """

    consumes = STEPS

    def __init__(
        self,
        input_dims: Mapping[str, int],
        gru: Callable[..., nn.Module],
        dim: int = 64,
        step_seconds: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self.modalities = sorted(input_dims)
        self.step_seconds = dict(step_seconds or {})
        bad = {m: s for m, s in self.step_seconds.items() if not s > 0}
        if bad:
            raise ValueError(f"event fusion step_seconds must be > 0, got {bad}")
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.1)
        self.gru = gru(input_size=dim + 2)
        self.out_features = gru_state_size(self.gru)

    def _times(self, m: str, steps: Tensor, times: Tensor | None) -> Tensor:
        if times is not None:
            return times.to(steps.dtype)
        if m not in self.step_seconds:
            raise ValueError(
                f"the batch has no step times for modality {m!r} and model.fusion.step_seconds has no "
                f"entry for it: give its encoded step duration in seconds"
            )
        index = torch.arange(steps.shape[1], device=steps.device, dtype=steps.dtype)
        return (index * self.step_seconds[m]).expand(steps.shape[0], -1)

    def forward(self, inputs: dict[str, FusionInput]) -> Tensor:
        feats, times, valid, total = [], [], [], 0
        for i, m in enumerate(self.modalities):
            steps, lengths, t = fill_absent(inputs[m])
            feats.append(self.proj[m](steps) + self.modality_embedding[i])
            times.append(self._times(m, steps, t))
            valid.append(step_mask(lengths, steps.shape[1], steps.device))
            total = total + lengths
        feats, times, valid = torch.cat(feats, 1), torch.cat(times, 1), torch.cat(valid, 1)
        # Padding sorts last (key +inf); a stable sort keeps modality-then-step order among ties.
        order = times.masked_fill(~valid, float("inf")).sort(dim=1, stable=True).indices
        T = int(total.max())  # noqa: N806 (T is time)
        order = order[:, :T]
        feats = feats.gather(1, order[..., None].expand(-1, -1, feats.shape[2]))
        times = times.gather(1, order)
        mask = step_mask(total, T, feats.device)
        gap = (times - torch.cat([times[:, :1], times[:, :-1]], dim=1)).clamp(min=0.0) * mask
        events = torch.cat([feats, gap[..., None], torch.log1p(1000.0 * gap)[..., None]], dim=-1)
        _, h_n = self.gru(events * mask[..., None], total)
        return final_state(self.gru, h_n)
