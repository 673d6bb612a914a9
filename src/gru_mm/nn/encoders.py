"""Per-modality encoders: (x [B, T, ...], lengths) -> (y [B, T', D], lengths')."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from gru_mm.nn import pretrained
from gru_mm.nn.feature_cache import FrozenBackbone, padded
from gru_mm.nn.masks import step_weights


class Encoder(nn.Module):
    """What every encoder declares, so a model is assembled without guessing.

    size_args:    constructor arguments whose values the data decides (in_features, in_channels,
                  vocab_size); when a model is built for some data, each modality's kind gives them.
    weight_files: constructor arguments naming files of pretrained weights (checked before any data is
                  read; not read again when the weights come from a checkpoint).
    time_stride:  input steps per output step: output step i starts at input step i * time_stride.
    out_features: features per output step.
    """

    size_args: ClassVar[tuple[str, ...]] = ()
    weight_files: ClassVar[tuple[str, ...]] = ()
    time_stride: int = 1
    out_features: int


def declared(target: object) -> type[Encoder]:
    """`target` when it is an `Encoder` class; else `Encoder` itself, which declares nothing."""
    return target if isinstance(target, type) and issubclass(target, Encoder) else Encoder


class AudioConvEncoder(Encoder):
    """Log-mel frames -> a small strided 1-D conv front end (shortens the sequence by `stride`).

    normalize: "utterance" standardises each mel bin over the clip's real frames (cepstral mean and
    variance normalisation): the channel and noise floor go, and speech stays louder than the silence
    around it. "frame" (a LayerNorm over each frame's mel bins, the default before issue 11) scales
    noise-only frames up to the level of speech; on espeak digits in noise a GRU's final state then
    memorised the training clips (test acc 0.09-0.11, logistic regression 0.74-0.78). Padding never
    changes a result either way: statistics see real frames only, and steps past each sequence's end
    are zeroed before every convolution, exactly as if the sequence stood alone with zero padding.
    """

    size_args = ("in_features",)

    def __init__(
        self,
        in_features: int,
        out_features: int = 64,
        channels: int = 64,
        stride: int = 2,
        kernel_size: int = 5,
        normalize: str = "frame",  # checkpoints from before this argument hold a LayerNorm
    ):
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if normalize not in ("utterance", "frame"):
            raise ValueError(f"normalize must be 'utterance' or 'frame', got {normalize!r}")
        self.time_stride = stride
        self.norm = nn.LayerNorm(in_features) if normalize == "frame" else _UtteranceNorm()
        self.conv1 = nn.Conv1d(in_features, channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(channels, out_features, 3, padding=1)
        self.act = nn.GELU()
        self.out_features = out_features

    def output_lengths(self, lengths: Tensor) -> Tensor:
        # ceil(L / stride): output frames whose window starts on a real input frame; 0 stays 0.
        return torch.div(lengths + self.time_stride - 1, self.time_stride, rounding_mode="floor")

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] == 0:  # the whole batch lacks audio: nothing to convolve
            return x.new_zeros(x.shape[0], 0, self.out_features), lengths
        on_device = lengths.to(x.device)  # one copy: both masks are built where the data is
        mask = step_weights(on_device, x.shape[1], x.device)
        h = (self.norm(x) if isinstance(self.norm, nn.LayerNorm) else self.norm(x, mask)) * mask
        h = self.act(self.conv1(h.transpose(1, 2))).transpose(1, 2)
        out_lengths = self.output_lengths(lengths)
        out_mask = step_weights(self.output_lengths(on_device), h.shape[1], h.device)
        h = self.act(self.conv2((h * out_mask).transpose(1, 2))).transpose(1, 2)
        return h * out_mask, out_lengths


class _UtteranceNorm(nn.Module):
    """[B, T, F] -> each feature standardised over its sequence's real steps (mask [B, T, 1])."""

    def forward(self, x: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
        mean = _real_step_mean(x, mask)
        var = _real_step_mean((x - mean) ** 2, mask)
        return (x - mean) * torch.rsqrt(var + eps)


def _real_step_mean(x: Tensor, mask: Tensor) -> Tensor:
    """[B, 1, F]: the mean of [B, T, F] over each sequence's real steps (mask [B, T, 1]); 0 for length 0."""
    return (x * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def _per_real_frame(cnn: nn.Module, x: Tensor, lengths: Tensor, out_features: int) -> Tensor:
    """Run `cnn` on the real frames of [B, T, C, H, W] only; padded steps of the result are zeros."""
    B, T = x.shape[:2]
    mask = torch.arange(T) < lengths[:, None]  # CPU: index without a device sync
    flat_idx = mask.reshape(-1).nonzero().squeeze(1).to(x.device)
    frames = x.reshape(B * T, *x.shape[2:]).index_select(0, flat_idx)
    out = x.new_zeros(B * T, out_features)
    if frames.shape[0] > 0:
        out = out.index_copy(0, flat_idx, cnn(frames).to(out.dtype))
    return out.reshape(B, T, out_features)


class FrameCNNEncoder(Encoder):
    """A per-frame CNN for image sequences [B, T, C, H, W], run on real frames only, never on padding."""

    size_args = ("in_channels",)

    def __init__(self, in_channels: int = 1, out_features: int = 64, channels: tuple[int, ...] = (16, 32)):
        super().__init__()
        layers, c_in = [], in_channels
        for i, c_out in enumerate(channels):
            layers.append(Conv2dNormActivation(c_in, c_out, kernel_size=3, stride=1 if i == 0 else 2))
            c_in = c_out
        self.cnn = nn.Sequential(
            *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, out_features)
        )
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return _per_real_frame(self.cnn, x, lengths, self.out_features), lengths


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (He et al. 2016's basic block); `stride` 2 halves the size."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            Conv2dNormActivation(c_in, c_out, 3, stride=stride),
            Conv2dNormActivation(c_out, c_out, 3, activation_layer=None),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else Conv2dNormActivation(c_in, c_out, 1, stride=stride, activation_layer=None)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class FrameResNetEncoder(Encoder):
    """A small ResNet per real frame of [B, T, C, H, W] (never on padding), sized to the frames.

    Frames above 64 px first pass a strided stem (7x7 stride 2, then 3x3 max pool stride 2, as in
    ResNet); then residual stages of stride 2, doubling the channels from `width` (at most `max_width`),
    until the map is at most `min_size` pixels a side, so every output sees the whole frame; a global
    average pool and a projection give `out_features`. `image_size` (the frames' larger side) comes from
    the data, so one config serves 8 px to 224 px frames. `residual` false makes each stage one strided
    convolution (cheaper); `input_norm` standardises each frame's channels first (InstanceNorm), so ink
    and paper colours and lighting matter less.
    """

    size_args = ("in_channels", "image_size")

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        out_features: int = 64,
        width: int = 16,
        max_width: int = 128,
        min_size: int = 4,
        residual: bool = True,
        input_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if image_size < 1 or width < 1 or min_size < 1:
            raise ValueError(
                f"image_size, width and min_size must be >= 1, got {image_size}, {width}, {min_size}"
            )
        if image_size > 64:
            layers: list[nn.Module] = [
                Conv2dNormActivation(in_channels, width, 7, stride=2),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
            size = (image_size + 3) // 4
        else:
            layers, size = [Conv2dNormActivation(in_channels, width, 3)], image_size
        c = width
        while size > min_size:
            c_out = min(2 * c, max_width)
            stage = _ResidualBlock(c, c_out, 2) if residual else Conv2dNormActivation(c, c_out, 3, stride=2)
            layers.append(stage)
            c, size = c_out, (size + 1) // 2
        self.cnn = nn.Sequential(
            nn.InstanceNorm2d(in_channels) if input_norm else nn.Identity(),
            *layers,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c, out_features),
        )
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return _per_real_frame(self.cnn, x, lengths, self.out_features), lengths


class BackboneFrameEncoder(FrozenBackbone, Encoder):
    """A torchvision classification model (resnet18, mobilenet_v3_small, ...) per real frame, then a
    projection to `out_features`.

    `weights_path` is a state dict file as torchvision saves it (e.g. resnet18-f37072fd.pth, copied
    to this machine by the user; nothing is downloaded); null trains from random weights. Frames in
    [0, 1] are normalised with `mean`/`std` (ImageNet's by default, what torchvision's weights expect);
    1-channel frames are repeated to 3. `freeze` fixes the backbone (and its BatchNorm statistics), so
    only the projection trains; its features are then computed once per clip and kept in `cache_dir`
    (`gru_mm.nn.feature_cache`; null: computed every time), so later epochs cost a projection.
    """

    size_args = ("in_channels",)
    weight_files = ("weights_path",)

    def __init__(
        self,
        arch: str = "resnet18",
        weights_path: str | None = None,
        in_channels: int = 3,
        out_features: int = 64,
        freeze: bool = False,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        cache_dir: str | None = None,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3 for a torchvision backbone, got {in_channels}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {list(mean)} and {list(std)}")
        self.backbone = pretrained.classification_model(arch)
        if weights_path:
            pretrained.load_weights(self.backbone, weights_path, arch)
        features = pretrained.strip_classifier(self.backbone, arch)
        self.freeze = freeze
        self.backbone.requires_grad_(not freeze)
        if freeze:  # eval from the start: Lightning restores each submodule's mode as it found it
            self.backbone.eval()
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)
        self.proj = nn.Linear(features, out_features)
        self.out_features = out_features
        self.backbone_features = features
        settings = {"arch": arch, "in_channels": in_channels, "mean": list(mean), "std": list(std)}
        self.init_feature_cache(cache_dir if freeze else None, settings)

    def train(self, mode: bool = True) -> BackboneFrameEncoder:
        super().train(mode)
        if self.freeze:  # a frozen backbone keeps its BatchNorm statistics too
            self.backbone.eval()
        return self

    def _backbone(self, frames: Tensor) -> Tensor:
        if self.in_channels == 1:
            frames = frames.expand(-1, 3, -1, -1)
        return self.backbone((frames - self.mean) / self.std)

    def _encode(self, frames: Tensor) -> Tensor:
        return self.proj(self._backbone(frames))

    def _clip_features(self, clips: list[Tensor]) -> list[Tensor]:
        # frames are independent (BatchNorm in eval mode): every clip's frames in one backbone call
        return list(self._backbone(torch.cat(clips)).split([len(c) for c in clips]))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if not self.freeze:
            return _per_real_frame(self._encode, x, lengths, self.out_features), lengths
        rows, features = self.frozen_features(x, lengths, self._clip_features)
        h, _ = padded(rows, features, x.shape[0], self.backbone_features, x.device, x.shape[1])
        return self.proj(h) * step_weights(lengths, h.shape[1], h.device), lengths


class LinearEncoder(Encoder):
    """Numeric series or precomputed features [B, T, F] -> [B, T, D] with a per-step projection."""

    size_args = ("in_features",)

    def __init__(self, in_features: int, out_features: int = 64):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_features, out_features), nn.GELU())
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.proj(x) * step_weights(lengths, x.shape[1], x.device), lengths


class SeriesConvEncoder(Encoder):
    """Numeric series [B, T, F] -> [B, T, D]: parallel 1-D convolutions over time of several widths and a
    second convolution over their outputs; each step's output adds up to three read-outs of them: the
    step's own (`local_path`), their running mean (`running_mean`), and a linear map of the step's raw
    values (`step_path`).

    A GRU fed one step at a time learns a frequency or a local shape slowly (issue 11: 0.55-0.75 test
    accuracy where logistic regression on autocorrelations reached 0.93); a few filters over neighbouring
    steps see them at once (the multi-width front end of InceptionTime, Ismail Fawaz et al. 2020). The
    filters' outputs are normalised per step (LayerNorm over channels: it never sees another step, so never
    the padding), which made learning about twice as fast on the issue's data. Padding never changes a
    result: steps past each sequence's end are zeroed before every convolution, exactly as if the sequence
    stood alone with zero padding ("same" padding, so step t stays step t). With `center`, the
    convolutions see each series minus its mean over its real steps (a sensor's offset is not a pattern;
    on the issue's data with 12 training sources: 0.87 vs 0.78 test accuracy).

    `running_mean` adds, at step t, a projection of the filters' outputs averaged over steps 0..t (causal,
    so padding never reaches it): the last step carries the whole series' summary, what global average
    pooling gives a convolutional classifier. Without it the GRU's final state had to gather that itself
    and memorised the training sources instead (12 training sources: 0.73-0.81 test accuracy; the same
    filters mean-pooled into the head: 0.92, logistic regression 0.925; with the running mean 0.91;
    docs/benchmarks.md). `step_path` adds a linear map of each step's raw values (LinearEncoder's view),
    offset included: it let the model tell the training sources apart by their offsets (there: 0.91
    without it, 0.88 with). `local_path` false leaves the GRU only the running mean (there 0.93, but the
    order of events within a series is then blurred). The constructor's defaults (running_mean off,
    step_path on) build the layers of checkpoints from before these arguments;
    conf/model/encoder/series_conv.yaml turns the running mean on and the step path off.
    """

    size_args = ("in_features",)

    def __init__(
        self,
        in_features: int,
        out_features: int = 64,
        channels: int = 32,
        kernel_sizes: tuple[int, ...] | list[int] = (3, 9, 15),
        layers: int = 2,
        center: bool = True,
        running_mean: bool = False,
        step_path: bool = True,
        local_path: bool = True,
    ):
        super().__init__()
        if not kernel_sizes or any(int(k) < 1 or int(k) % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd widths >= 1 (so step t stays t), got {kernel_sizes}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if not (local_path or running_mean or step_path):
            raise ValueError("local_path, running_mean and step_path are all off: the encoder would output 0")
        width = channels * len(kernel_sizes)
        self.branches = nn.ModuleList(
            nn.Conv1d(in_features, channels, int(k), padding=int(k) // 2) for k in kernel_sizes
        )
        self.norm = nn.LayerNorm(width)
        self.stack = nn.ModuleList(nn.Conv1d(width, width, 3, padding=1) for _ in range(layers - 1))
        self.proj = nn.Linear(width, out_features) if local_path else None
        self.summary = nn.Linear(width, out_features) if running_mean else None
        self.step = nn.Linear(in_features, out_features) if step_path else None
        self.act = nn.GELU()
        self.center = center
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] == 0:  # the whole batch lacks this modality: nothing to convolve
            return x.new_zeros(x.shape[0], 0, self.out_features), lengths
        mask = step_weights(lengths, x.shape[1], x.device)  # [B, T, 1]
        channel_mask = mask.transpose(1, 2)
        x = x * mask
        seen = x
        if self.center:  # the mean over real steps only; a length 0 stays zero
            seen = (x - _real_step_mean(x, mask)) * mask
        h = torch.cat([conv(seen.transpose(1, 2)) for conv in self.branches], dim=1)
        h = self.act(self.norm(h.transpose(1, 2)).transpose(1, 2)) * channel_mask
        for conv in self.stack:
            h = self.act(conv(h)) * channel_mask
        h = h.transpose(1, 2)  # [B, T, width]
        parts = []
        if self.proj is not None:
            parts.append(self.proj(h))
        if self.summary is not None:  # steps 0..t only: a real step never sees padding
            counts = torch.arange(1, h.shape[1] + 1, device=h.device, dtype=h.dtype)[None, :, None]
            parts.append(self.summary(h.cumsum(dim=1) / counts))
        if self.step is not None:
            parts.append(self.step(x))
        return self.act(sum(parts)) * mask, lengths


class TokenEmbeddingEncoder(Encoder):
    """Token ids [B, T] -> embeddings [B, T, D]; id 0 is padding (a zero vector, never trained).

    `vocab_size` comes from the data's vocabulary (built from the training split or read from a file).
    With `vectors_path` (a GloVe or fastText text file) the rows start from those word vectors; that
    needs `vocab`, the tokens in id order. `freeze` keeps the embedding fixed during training.

    Two choices keep it from memorising the training texts (issue 11: 0.86 test accuracy, 1.00 on the
    training split, where a bag-of-words logistic regression reached 0.92): rows start small (N(0,
    `init_std`), not nn.Embedding's N(0, 1)), so a word's vector is what training taught it rather than a
    random code the GRU can tell every rare word by, as a linear model's weights start at 0; and in
    training each token is left out with probability `token_dropout` (its vector zeroed, AWD-LSTM's
    embedding dropout by position), so no single word decides a prediction. `dropout` drops single
    features of the vectors.
    """

    size_args = ("vocab_size",)
    weight_files = ("vectors_path",)

    def __init__(
        self,
        vocab_size: int,
        out_features: int = 64,
        dropout: float = 0.0,
        vectors_path: str | None = None,
        freeze: bool = False,
        vocab: list[str] | None = None,
        token_dropout: float = 0.0,
        init_std: float = 0.1,
    ):
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (<pad> and <unk>), got {vocab_size}")
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must lie in [0, 1), got {token_dropout}")
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.embed = nn.Embedding(vocab_size, out_features, padding_idx=0)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, init_std)
            self.embed.weight[0].zero_()  # <pad>
        if vectors_path:
            if vocab is None or len(vocab) != vocab_size:
                raise ValueError(
                    f"vectors_path needs the vocabulary's {vocab_size} tokens in id order (vocab)"
                )
            with torch.no_grad():
                self.embed.weight.copy_(pretrained.embedding_matrix(list(vocab), vectors_path, out_features))
        self.embed.weight.requires_grad_(not freeze)
        self.dropout = nn.Dropout(dropout)
        self.token_dropout = float(token_dropout)
        self.out_features = out_features

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        ids = x.long().reshape(x.shape[0], x.shape[1])  # a batch without text arrives as float [B, 0]
        keep = step_weights(lengths, ids.shape[1], ids.device)
        if self.training and self.token_dropout > 0:
            keep = keep * (torch.rand(ids.shape, device=ids.device) >= self.token_dropout)[..., None]
        return self.dropout(self.embed(ids)) * keep, lengths
