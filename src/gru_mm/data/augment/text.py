"""Word dropout for token-id sequences (`text` kind)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gru_mm.data.kinds.vocabulary import UNK, Vocabulary

UNK_ID = Vocabulary([]).index[UNK]  # every vocabulary puts <unk> at the same id


class WordDropout(nn.Module):
    """Each token id becomes <unk> with probability `p` (the model sees a word it does not know).

    Written here: torchtext (deprecated) has no such transform and torch has none for token ids.
    """

    def __init__(self, p: float, unk_id: int = UNK_ID):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"word dropout p must be in [0, 1), got {p}")
        self.p = p
        self.unk_id = unk_id

    def forward(self, ids: Tensor) -> Tensor:
        drop = torch.rand(ids.shape, device=ids.device) < self.p
        return ids.masked_fill(drop, self.unk_id)
