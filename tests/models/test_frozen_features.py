"""Frozen pretrained backbones run once per clip: their features are cached on disk, keyed by the clip,
the weights and the encoder's settings; a torchaudio speech model (wav2vec 2.0) reads raw waveform."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import torchvision
from model_testlib import compose_train

from conftest import run_cli
from gru_mm.bench.baseline_data import vowels
from gru_mm.config import ConfigError
from gru_mm.data.kinds import Audio
from gru_mm.models.build import check_pretrained_files, encoder_data_settings
from gru_mm.nn.encoders import BackboneFrameEncoder
from gru_mm.nn.pretrained import PretrainedError
from gru_mm.nn.speech import SpeechModelEncoder

# a wav2vec 2.0 of 33k parameters (the published base model has 94M): stride 5*2*2*2*2 = 80 samples
TINY_W2V = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]],
    "extractor_conv_bias": False,
    "encoder_embed_dim": 32,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 2,
    "encoder_num_heads": 2,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": 64,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.1,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.05,
    "aux_num_out": None,
}


def _w2v_weights(path, seed: int):
    torch.manual_seed(seed)
    torch.save(torchaudio.models.wav2vec2_model(**TINY_W2V).state_dict(), path)
    return path


def _resnet_weights(path, seed: int):
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


class Calls:
    """Counts a module's forward calls (a real forward hook on the real backbone)."""

    def __init__(self, module: torch.nn.Module):
        self.n = 0
        module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))


def _frames_encoder(weights, cache_dir, seed: int = 0) -> BackboneFrameEncoder:
    torch.manual_seed(seed)  # the projection's initial weights
    return BackboneFrameEncoder(
        "resnet18",
        str(weights),
        in_channels=3,
        out_features=8,
        freeze=True,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


def _frame_batches(n_batches: int = 3):
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n_batches):
        lengths = torch.tensor([4, 2, 0, 3])
        x = torch.rand(4, 4, 3, 32, 32, generator=gen)
        x[torch.arange(4)[None, :] >= lengths[:, None]] = 0  # zeros at padding
        batches.append((x, lengths))
    return batches


def _epoch(encoder, batches):
    with torch.no_grad():
        return [encoder(x, lengths) for x, lengths in batches]


def test_second_epoch_reads_frame_features_from_disk_and_equals_the_uncached_path(tmp_path):
    weights = _resnet_weights(tmp_path / "r.pth", seed=1)
    batches = _frame_batches()
    cached = _frames_encoder(weights, tmp_path / "cache").train()
    calls = Calls(cached.backbone)
    first = _epoch(cached, batches)
    assert calls.n == len(batches) and cached.feature_cache.misses == 9  # 9 clips with frames
    second = _epoch(cached, batches)
    assert calls.n == len(batches)  # the backbone did not run again
    assert cached.feature_cache.hits == 9
    uncached = _frames_encoder(weights, None).train()
    plain_calls = Calls(uncached.backbone)
    for a, b, (c, c_len), (_, lengths) in zip(first, second, _epoch(uncached, batches), batches, strict=True):
        torch.testing.assert_close(a[0], c, rtol=0, atol=1e-6)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], lengths) and torch.equal(c_len, lengths)
        assert not a[0][lengths[:, None] <= torch.arange(4)].any()  # padded steps stay zero
    _epoch(uncached, batches)
    assert plain_calls.n == 2 * len(batches)  # without a cache folder every epoch runs it
    # a new process (a resumed run, the next training run) reads the same entries
    again = _frames_encoder(weights, tmp_path / "cache")
    again_calls = Calls(again.backbone)
    _epoch(again, batches)
    assert again_calls.n == 0 and again.feature_cache.hits == 9


def test_changed_weights_file_or_loaded_state_is_a_new_cache(tmp_path):
    batches = _frame_batches(1)
    w1 = _resnet_weights(tmp_path / "r.pth", seed=1)
    one = _frames_encoder(w1, tmp_path / "cache")
    out1 = _epoch(one, batches)[0][0]
    w2 = _resnet_weights(tmp_path / "r.pth", seed=2)  # the same path, other weights
    two = _frames_encoder(w2, tmp_path / "cache")
    out2 = _epoch(two, batches)[0][0]
    assert two.feature_cache.hits == 0 and two.feature_cache.misses == 3
    assert not torch.allclose(out1, out2)
    # weights loaded (from a checkpoint) after the first call: their own entries (one's), not w2's
    two.load_state_dict(one.state_dict())
    assert torch.equal(_epoch(two, batches)[0][0], out1)
    assert two.feature_cache.hits == 3 and two.feature_cache.misses == 3
    # other settings (normalisation) are a new cache too
    torch.manual_seed(0)
    other = BackboneFrameEncoder(
        "resnet18",
        str(w1),
        3,
        8,
        freeze=True,
        mean=(0.5, 0.5, 0.5),
        cache_dir=str(tmp_path / "cache"),
    )
    _epoch(other, batches)
    assert other.feature_cache.misses == 3


def test_a_corrupt_entry_is_computed_again_with_a_warning(tmp_path, caplog):
    weights = _resnet_weights(tmp_path / "r.pth", seed=1)
    batches = _frame_batches(1)
    first = _epoch(_frames_encoder(weights, tmp_path / "cache"), batches)[0][0]
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 3 and not list((tmp_path / "cache").rglob("*.tmp*"))  # written whole
    entries[0].write_bytes(b"\x93NUMPY garbage")
    again = _frames_encoder(weights, tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="gru_mm.nn"):
        out = _epoch(again, batches)[0][0]
    assert again.feature_cache.misses == 1 and again.feature_cache.hits == 2
    assert "unreadable" in caplog.text and str(entries[0]) in caplog.text
    torch.testing.assert_close(out, first, rtol=0, atol=1e-6)
    np.load(entries[0])  # rebuilt


def test_unwritable_cache_folder_warns_and_computes(tmp_path, caplog):
    weights = _resnet_weights(tmp_path / "r.pth", seed=1)
    (tmp_path / "file").write_text("not a folder")
    enc = _frames_encoder(weights, tmp_path / "file" / "cache")
    with caplog.at_level(logging.WARNING, logger="gru_mm.nn"):
        _epoch(enc, _frame_batches(1))
        _epoch(enc, _frame_batches(1))
    assert enc.feature_cache.misses == 6 and "cannot be cached" in caplog.text


def _waves(lengths, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths), 1)
    for i, n in enumerate(lengths):
        x[i, :n, 0] = torch.randn(n, generator=gen) * 0.1
    return x, torch.tensor(lengths)


def test_speech_model_runs_each_clip_alone_once_and_loads_the_file(tmp_path):
    weights = _w2v_weights(tmp_path / "w2v.pt", seed=1)
    torch.manual_seed(0)
    enc = SpeechModelEncoder(
        "wav2vec2_model", str(weights), 8, config=TINY_W2V, cache_dir=str(tmp_path / "c")
    )
    assert torch.equal(
        enc.backbone.state_dict()["encoder.feature_projection.projection.weight"],
        torch.load(weights)["encoder.feature_projection.projection.weight"],
    )
    assert enc.time_stride == 80 and enc.receptive_field == 100
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    x, lengths = _waves([1600, 800, 0, 60])
    calls = Calls(enc.backbone.feature_extractor)
    enc.train()
    y, out_lengths = enc(x, lengths)
    assert calls.n == 3  # one clip at a time (the model's GroupNorm would see padding)
    assert out_lengths.tolist() == [19, 9, 0, 1]  # conv arithmetic; a 60-sample clip is padded to 100
    assert y.shape == (4, 19, 8) and not y[2].any() and not y[1, 9:].any()
    for i in (0, 1):  # a clip alone gives what it gets in a padded batch
        alone, _ = enc(x[i : i + 1, : lengths[i]], lengths[i : i + 1])
        torch.testing.assert_close(alone[0], y[i, : out_lengths[i]], rtol=0, atol=1e-6)
    assert calls.n == 3  # ... read from the cache
    y2, _ = enc(x, lengths)
    assert calls.n == 3 and torch.equal(y, y2)
    # the uncached path gives the same
    torch.manual_seed(0)
    plain = SpeechModelEncoder("wav2vec2_model", str(weights), 8, config=TINY_W2V, cache_dir=None)
    torch.testing.assert_close(plain(x, lengths)[0], y, rtol=0, atol=1e-6)
    # a projection that trains: gradients reach it, not the backbone
    enc(x, lengths)[0].sum().backward()
    assert enc.proj.weight.grad is not None
    with pytest.raises(ValueError, match="layer must lie in"):
        SpeechModelEncoder("wav2vec2_model", None, 8, layer=3, config=TINY_W2V)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"arch": "wav2vec3"}, "arch='wav2vec3' is not a torchaudio speech model builder"),
        (
            {"arch": "wav2vec2_model", "config": {"bogus": 1}},
            "config does not fit torchaudio.models.wav2vec2_model",
        ),
        (
            {"arch": "wav2vec2_model", "config": TINY_W2V, "weights": "/nowhere/w.pt"},
            "weights file /nowhere/w.pt does not exist or is not a file",
        ),
        ({"arch": "wav2vec2_model", "config": TINY_W2V, "in_features": 40}, "reads mono waveform"),
    ],
)
def test_speech_model_errors_are_one_sentence(kwargs, message):
    with pytest.raises((PretrainedError, ValueError), match=message):
        SpeechModelEncoder(**kwargs)


def test_weights_of_another_model_name_what_does_not_fit(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(PretrainedError, match=f"weights file {path} does not fit wav2vec2_model"):
        SpeechModelEncoder("wav2vec2_model", str(path), config=TINY_W2V)


def test_missing_or_absent_weights_file_is_a_config_error_naming_the_key(tmp_path):
    base = ["data=manifest", "data.path=x.csv", "model/encoder@model.encoders.audio=wav2vec2"]
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError) as err:
        check_pretrained_files(compose_train(*base, f"model.encoders.audio.weights={missing}"))
    assert str(err.value) == f"model.encoders.audio.weights={missing}: no such file"
    with pytest.raises(ConfigError, match=r"^model.encoders.audio.weights is required: the path of a local"):
        check_pretrained_files(compose_train(*base))


def test_the_speech_encoder_sets_its_audio_decoding(tmp_path):
    cfg = compose_train("data=manifest", "data.path=x.csv", "model/encoder@model.encoders.audio=wav2vec2")
    assert cfg.data.source.audio.features == "logmel"
    encoder_data_settings(cfg)
    assert cfg.data.source.audio.features == "waveform" and cfg.data.source.audio.sample_rate == 16000
    chosen = compose_train(
        "data=manifest",
        "data.path=x.csv",
        "model/encoder@model.encoders.audio=wav2vec2",
        "data.source.audio.sample_rate=8000",
    )
    with pytest.raises(ConfigError, match=r"^data.source.audio.sample_rate=8000, but model.encoders.audio"):
        encoder_data_settings(chosen)
    builtin = compose_train("model/encoder@model.encoders.audio=wav2vec2")  # avdigits: log-mel only
    with pytest.raises(ConfigError, match="which this data source does not decode: use data=manifest"):
        encoder_data_settings(builtin)
    # the audio kind then decodes samples, resampled to 16 kHz
    path = tmp_path / "a.wav"
    sf.write(path, np.sin(np.arange(8000) / 8.0).astype(np.float32), 8000)
    wave = Audio(features="waveform").decode(path)
    assert wave["data"].shape == (16000, 1) and "times" not in wave
    assert Audio(features="waveform").step_shape() == (1,)
    assert "features" not in Audio().settings()  # log-mel caches made before the setting keep their keys
    with pytest.raises(Exception, match="data.source.audio.features='mfcc' is not one of logmel, waveform"):
        Audio(features="mfcc")


def _override(value) -> str:
    """A Python value as a Hydra command-line value."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_override(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.slow
def test_a_tiny_wav2vec2_trains_through_the_cli_and_its_checkpoint_predicts_alone(tmp_path):
    """gru-mm-train with +model/encoder@model.encoders.audio=wav2vec2 on generated vowels: the audio is
    decoded as waveform by itself, each clip's features land in the run's data/cache/frozen once, and
    the checkpoint alone (no weights file) predicts new rows."""
    manifest = vowels(tmp_path / "media", per_speaker=8, speakers=(3, 1, 1))
    weights = _w2v_weights(tmp_path / "w2v.pt", seed=1)
    project = tmp_path / "run"
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={manifest}",
        f"paths.root={project}",
        "logger=csv",
        "log_model=false",
        "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false",
        "model.gru.hidden_size=8",
        "model.head.hidden=8",
        "data.batch_size=8",
        "model/encoder@model.encoders.audio=wav2vec2",  # in place of the default audio_conv
        "model.encoders.audio.arch=wav2vec2_model",
        f"model.encoders.audio.weights={weights}",
        f"model.encoders.audio.config={_override(TINY_W2V)}",
        "model.encoders.audio.out_features=8",
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "data.source.audio.features=waveform (model.encoders.audio reads it)" in log
    assert re.search(r"epoch 3/3 .*val/acc=", log)
    entries = list((project / "data" / "cache" / "frozen").rglob("*.npy"))
    assert len(entries) == 8 * 5  # every clip of every split, once (a clip is its own key)
    ckpt = next(project.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["gru_mm"]["config"]["data"]["source"]["audio"]["features"] == "waveform"
    state = saved["state_dict"]
    conv = next(
        v
        for k, v in state.items()
        if k.endswith("encoders.audio.backbone.feature_extractor.conv_layers.0.conv.weight")
    )
    assert torch.equal(conv, torch.load(weights)["feature_extractor.conv_layers.0.conv.weight"])  # frozen
    weights.rename(tmp_path / "moved.pt")  # the checkpoint holds the weights
    out = tmp_path / "pred.csv"
    predicted = run_cli(
        "gru-mm-predict", f"ckpt_path={ckpt}", f"data_path={manifest}", f"out={out}", f"paths.root={project}"
    )
    assert predicted.returncode == 0, (predicted.stdout + predicted.stderr)[-3000:]
    assert len(out.read_text().strip().splitlines()) == 1 + 8 * 5


def test_augmenting_a_frozen_modality_warns_that_every_clip_is_new(caplog):
    from gru_mm.models.build import warn_changing_frozen_inputs

    frozen = ["data=manifest", "data.path=x.csv", "+model/encoder@model.encoders.frames=frame_backbone"]
    frozen.append("model.encoders.frames.freeze=true")
    with caplog.at_level(logging.WARNING, logger="gru_mm.train"):
        warn_changing_frozen_inputs(compose_train(*frozen))
        warn_changing_frozen_inputs(compose_train(*frozen[:-1], "data/augment=standard"))  # not frozen
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="gru_mm.train"):
        warn_changing_frozen_inputs(compose_train(*frozen, "data/augment=standard"))
    assert "model.encoders.frames keeps a frozen backbone's features per clip, but data.augment.frames" in (
        caplog.text
    )
