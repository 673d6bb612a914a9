"""A multimodal GRU model assembled from parts: encoder per modality -> GRU per modality -> fusion -> head."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from gru_mm.data.batch import Seq


class MultimodalGRU(nn.Module):
    """encoders[m](Seq) -> gru[m] -> fusion({m: final state}) -> head.

    gru, fusion and head are factories (Hydra `_partial_` configs) because their sizes follow
    from the encoders': gru(input_size=...), fusion(input_dims={m: dim}), head(in_features, out_features).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        gru: Callable[..., nn.Module],
        fusion: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        num_classes: int,
        modalities: list[str] | None = None,
    ):
        super().__init__()
        if not encoders:
            raise ValueError("model.encoders is empty: give at least one modality's encoder")
        unknown = sorted(set(modalities or []) - set(encoders))
        if unknown:
            raise ValueError(f"model.modalities names {unknown}, which have no encoder in model.encoders")
        # `modalities` picks a subset of the configured encoders (single-modality baselines, ablations).
        self.modalities = sorted(modalities or encoders)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.grus = nn.ModuleDict({m: gru(input_size=self.encoders[m].out_features) for m in self.modalities})
        dims = {m: self._state_dim(self.grus[m]) for m in self.modalities}
        self.fusion = fusion(input_dims=dims)
        self.head = head(in_features=self.fusion.out_features, out_features=num_classes)

    @staticmethod
    def _state_dim(gru: nn.Module) -> int:
        return gru.hidden_size * (2 if gru.bidirectional else 1)

    def encode(self, inputs: Mapping[str, Seq]) -> tuple[dict, dict, dict, dict]:
        """Per modality: final states [B, D*H], outputs [B, T, D*H], lengths, presence."""
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise ValueError(f"batch lacks modalities {missing}; the model expects {self.modalities}")
        states, outputs, lengths, present = {}, {}, {}, {}
        for m in self.modalities:
            seq = inputs[m]
            x, lens = self.encoders[m](seq.data, seq.lengths)
            out, h_n = self.grus[m](x, lens)
            gru = self.grus[m]
            d = 2 if gru.bidirectional else 1
            # last layer's state(s): [D, B, H] -> [B, D*H]
            states[m] = h_n[-d:].transpose(0, 1).reshape(x.shape[0], -1)
            outputs[m], lengths[m], present[m] = out, lens, seq.present
        return states, outputs, lengths, present

    def forward(self, inputs: Mapping[str, Seq]) -> Tensor:
        fused = self.fusion(*self.encode(inputs))
        return self.head(fused)
