"""Per-modality encoders: (x [B, T, ...], lengths) -> (y [B, T', D], lengths')."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation


class AudioConvEncoder(nn.Module):
    """Log-mel frames -> a small strided 1-D conv front end (shortens the sequence by `stride`).

    Padding never changes a result: each frame is normalised on its own (LayerNorm over mel bins,
    not BatchNorm, whose statistics would see the padding), and steps past each sequence's end are
    zeroed before every convolution, exactly as if the sequence stood alone with zero padding.
    """

    def __init__(self, in_features: int, out_features: int = 64, channels: int = 64, stride: int = 2,
                 kernel_size: int = 5):
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self.norm = nn.LayerNorm(in_features)
        self.conv1 = nn.Conv1d(in_features, channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(channels, out_features, 3, padding=1)
        self.act = nn.GELU()
        self.out_features = out_features

    def output_lengths(self, lengths: Tensor) -> Tensor:
        # ceil(L / stride): output frames whose window starts on a real input frame; 0 stays 0.
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] == 0:  # the whole batch lacks audio: nothing to convolve
            return x.new_zeros(x.shape[0], 0, self.out_features), lengths
        mask = _step_mask(lengths, x.shape[1], x.device)
        h = self.norm(x) * mask
        h = self.act(self.conv1(h.transpose(1, 2))).transpose(1, 2)
        out_lengths = self.output_lengths(lengths)
        out_mask = _step_mask(out_lengths, h.shape[1], h.device)
        h = self.act(self.conv2((h * out_mask).transpose(1, 2))).transpose(1, 2)
        return h * out_mask, out_lengths


def _step_mask(lengths: Tensor, T: int, device: torch.device) -> Tensor:  # noqa: N803 (T is time)
    """[B, T, 1] float: 1 at real steps, 0 at padding (built on the CPU, where lengths live)."""
    return (torch.arange(T) < lengths[:, None]).to(device=device, dtype=torch.float32)[..., None]


class FrameCNNEncoder(nn.Module):
    """A per-frame CNN for image sequences [B, T, C, H, W], run on real frames only, never on padding."""

    def __init__(self, in_channels: int = 1, out_features: int = 64, channels: tuple[int, ...] = (16, 32)):
        super().__init__()
        layers, c_in = [], in_channels
        for i, c_out in enumerate(channels):
            layers.append(Conv2dNormActivation(c_in, c_out, kernel_size=3, stride=1 if i == 0 else 2))
            c_in = c_out
        self.cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, out_features))
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        B, T = x.shape[:2]
        mask = torch.arange(T) < lengths[:, None]  # CPU: index without a device sync
        flat_idx = mask.reshape(-1).nonzero().squeeze(1).to(x.device)
        frames = x.reshape(B * T, *x.shape[2:]).index_select(0, flat_idx)
        out = x.new_zeros(B * T, self.out_features)
        if frames.shape[0] > 0:
            out = out.index_copy(0, flat_idx, self.cnn(frames).to(out.dtype))
        return out.reshape(B, T, self.out_features), lengths


class LinearEncoder(nn.Module):
    """Numeric series or precomputed features [B, T, F] -> [B, T, D] with a per-step projection."""

    def __init__(self, in_features: int, out_features: int = 64):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_features, out_features), nn.GELU())
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.proj(x) * _step_mask(lengths, x.shape[1], x.device), lengths


class TokenEmbeddingEncoder(nn.Module):
    """Token ids [B, T] -> embeddings [B, T, D]; id 0 is padding (a zero vector, never trained).

    `vocab_size` comes from the data's vocabulary (built from the training split or read from a file).
    """

    def __init__(self, vocab_size: int, out_features: int = 64, dropout: float = 0.0):
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (<pad> and <unk>), got {vocab_size}")
        self.embed = nn.Embedding(vocab_size, out_features, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        ids = x.long().reshape(x.shape[0], x.shape[1])  # a batch without text arrives as float [B, 0]
        return self.dropout(self.embed(ids)) * _step_mask(lengths, ids.shape[1], ids.device), lengths
