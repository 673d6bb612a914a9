"""A frozen self-supervised speech model (wav2vec 2.0, HuBERT, WavLM from `torchaudio.models`) over raw
waveform, its features computed once per clip and cached on disk, then a trained projection."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torchaudio
from torch import Tensor, nn

from gru_mm.nn import pretrained
from gru_mm.nn.encoders import Encoder
from gru_mm.nn.feature_cache import FrozenBackbone, padded
from gru_mm.nn.masks import step_weights

# torchaudio.models builders of a Wav2Vec2Model (none downloads: they build the architecture only)
ARCHS = (
    "wav2vec2_base",
    "wav2vec2_large",
    "wav2vec2_large_lv60k",
    "wav2vec2_xlsr_300m",
    "wav2vec2_xlsr_1b",
    "wav2vec2_xlsr_2b",
    "hubert_base",
    "hubert_large",
    "hubert_xlarge",
    "wavlm_base",
    "wavlm_large",
    "wav2vec2_model",
    "wavlm_model",
)


class SpeechModelEncoder(FrozenBackbone, Encoder):
    """Raw mono waveform [B, T, 1] at 16 kHz -> a frozen torchaudio speech model's features [B, T', D]
    (one step per 20 ms for the published models) -> LayerNorm + Linear to `out_features`.

    `arch` names a `torchaudio.models` builder (wav2vec2_base, hubert_base, ...); `config` gives its
    keyword arguments (all of them for `wav2vec2_model`: a model of another size). `weights` is a state
    dict file of that model as torchaudio names its parameters (e.g. `bundle.get_model().state_dict()`
    of a `torchaudio.pipelines` bundle, saved where a download is possible: nothing is downloaded here);
    null leaves random weights (for a model whose weights a checkpoint holds). `layer` picks the
    transformer layer whose output is used (1-based; null: the last), so later layers are never run.

    Each clip runs alone at its true length (the models' GroupNorm and attention would see padding), in
    eval mode, without gradients; `cache_dir` keeps its features (`gru_mm.nn.feature_cache`), so
    epochs after the first cost the projection. A clip shorter than the model's receptive field (400
    samples for the published ones) is zero-padded to it.
    """

    # the audio kind's settings this encoder needs: raw samples at the rate the models were trained on
    data_settings: ClassVar[dict[str, Any]] = {"features": "waveform", "sample_rate": 16000}
    size_args = ("in_features",)  # the waveform's channels: 1 (mono)
    weight_files = ("weights",)
    required_files = ("weights",)  # training from the config (not a checkpoint) needs the file

    def __init__(
        self,
        arch: str = "wav2vec2_base",
        weights: str | None = None,
        out_features: int = 64,
        layer: int | None = None,
        normalize_waveform: bool = False,
        config: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        in_features: int = 1,
    ):
        super().__init__()
        if in_features != 1:
            raise ValueError(
                f"{type(self).__name__} reads mono waveform (in_features 1), got in_features={in_features}: "
                "decode audio with data.source.audio.features=waveform"
            )
        if arch not in ARCHS:
            raise pretrained.PretrainedError(
                f"arch={arch!r} is not a torchaudio speech model builder (one of {', '.join(ARCHS)})"
            )
        try:
            self.backbone = getattr(torchaudio.models, arch)(**dict(config or {}))
        except TypeError as err:
            raise pretrained.PretrainedError(
                f"config does not fit torchaudio.models.{arch} ({err})"
            ) from None
        if weights:
            pretrained.load_weights(self.backbone, weights, arch, optional=("aux",))
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        depth = len(self.backbone.encoder.transformer.layers)
        if layer is not None and not 1 <= layer <= depth:
            raise ValueError(f"layer must lie in [1, {depth}] for this {arch} (null: the last), got {layer}")
        self.layer = layer or depth
        self.normalize_waveform = normalize_waveform
        convs = [block.conv for block in self.backbone.feature_extractor.conv_layers]
        self.time_stride = math.prod(c.stride[0] for c in convs)
        self.receptive_field = 1
        for c in reversed(convs):
            self.receptive_field = (self.receptive_field - 1) * c.stride[0] + c.kernel_size[0]
        self.features = self.backbone.encoder.feature_projection.projection.out_features
        self.norm = nn.LayerNorm(self.features)
        self.proj = nn.Linear(self.features, out_features)
        self.out_features = out_features
        settings = {"arch": arch, "layer": self.layer, "normalize_waveform": normalize_waveform}
        self.init_feature_cache(cache_dir, settings)

    def train(self, mode: bool = True) -> SpeechModelEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen: its dropout stays off
        return self

    def _clip_features(self, clips: list[Tensor]) -> list[Tensor]:
        out = []
        for clip in clips:  # one at a time: padding would change the others' features
            wave = clip.reshape(1, -1).float()
            if self.normalize_waveform:
                wave = (wave - wave.mean()) / (wave.std(unbiased=False) + 1e-7)
            if wave.shape[1] < self.receptive_field:
                wave = nn.functional.pad(wave, (0, self.receptive_field - wave.shape[1]))
            layers, _ = self.backbone.extract_features(wave, num_layers=self.layer)
            out.append(layers[-1][0])
        return out

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        rows, features = self.frozen_features(x, lengths, self._clip_features)
        h, out_lengths = padded(rows, features, x.shape[0], self.features, x.device)
        return self.proj(self.norm(h)) * step_weights(out_lengths, h.shape[1], h.device), out_lengths
