"""Config -> objects, in the order that lets bad values fail before any data is read."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from gru_mm.config import ConfigError
from gru_mm.data import kinds as modality_kinds
from gru_mm.data.kinds import ModalityKind
from gru_mm.data.sources.base import DataError
from gru_mm.models.module import DEFAULT_MONITOR, SequenceClassifier, loss_class_weights, metric_names
from gru_mm.nn.encoders import Encoder, declared
from gru_mm.nn.pretrained import PretrainedError

log = logging.getLogger("gru_mm.train")


def retarget_data(
    train_cfg: DictConfig, data_path: str | Path, data_dir: str, trust_pickle: bool, what: str = "data_path"
) -> DictConfig:
    """A trained model's config with its data source pointed at another file of the same kind (a
    manifest or a features file), decoded into this project's cache. `trust_pickle` is this command's
    own: trusting the training file says nothing of the new one."""
    source = train_cfg.data.source
    if "path" not in source:  # the built-in data set: nothing else to read
        raise ConfigError(
            f"{what}: this model was trained on {source._target_.rsplit('.', 1)[-1]}, which reads "
            "no files; only models trained on a manifest or a features file read another file"
        )
    path = Path(data_path).expanduser()
    if path.suffix.lower() in (".pkl", ".pickle") and trust_pickle is not True:
        key = "trust_pickle" if what == "data_path" else "data.trust_pickle"
        raise ConfigError(
            f"{what}={path} is a pickle, and loading a pickle runs any code inside it, "
            f"so set {key}=true only if you trust where the file came from"
        )
    cfg = copy.deepcopy(train_cfg)
    with open_dict(cfg):
        cfg.data.source.path = str(path)
        if "cache_dir" in cfg.data.source:
            cfg.data.source.cache_dir = f"{data_dir}/cache"
        if "trust_pickle" in cfg.data.source:
            cfg.data.source.trust_pickle = trust_pickle is True
    return cfg


def encoder_data_settings(cfg: DictConfig) -> None:
    """Give each modality's kind the decoding its encoder declares (`data_settings`, e.g. raw waveform
    for a speech model), in `cfg` itself so that the run's recorded config says what was decoded.

    Only a kind setting still at its default is set; one the user chose otherwise is a config error.
    """
    encoders = OmegaConf.select(cfg, "model.encoders", default=None) or {}
    chosen = OmegaConf.select(cfg, "model.modalities", default=None)
    source = OmegaConf.select(cfg, "data.source", default=None)
    for m, enc in encoders.items():
        if not isinstance(enc, DictConfig) or not enc.get("_target_") or (chosen and m not in chosen):
            continue  # (an encoder without a class fails later, where its modality is known to be used)
        needs = getattr(_encoder_class(enc, f"model.encoders.{m}"), "data_settings", None)
        if not needs:
            continue
        kind = (source.get("columns") or {}).get(m, m) if source is not None else m
        if source is None or not isinstance(source.get(kind), DictConfig):
            wanted = ", ".join(f"data.source.{kind}.{k}={v}" for k, v in needs.items())
            raise ConfigError(
                f"model.encoders.{m} ({enc._target_.rsplit('.', 1)[-1]}) needs {wanted}, which this data "
                "source does not decode: use data=manifest"
            )
        defaults = modality_kinds.get(kind)() if kind in modality_kinds.names() else None
        with open_dict(source):
            for key, value in needs.items():
                given = source[kind].get(key, getattr(defaults, key, None))
                if given != value and defaults is not None and given != getattr(defaults, key, given):
                    raise ConfigError(
                        f"data.source.{kind}.{key}={given}, but model.encoders.{m} "
                        f"({enc._target_.rsplit('.', 1)[-1]}) reads {key}={value}: set it to {value}"
                    )
                if given != value:
                    log.info("data.source.%s.%s=%s (model.encoders.%s reads it)", kind, key, value, m)
                    source[kind][key] = value


def warn_changing_frozen_inputs(cfg: DictConfig) -> None:
    """A frozen encoder's feature cache keys each clip by its contents: training crops and augmentation
    make every drawn clip new, so each is computed (and stored) again. Say so, naming the settings."""
    from gru_mm.paths import CONF_DIR

    off = OmegaConf.load(CONF_DIR / "data" / "augment" / "none.yaml")  # every strength 0
    augment = OmegaConf.select(cfg, "data.augment", default=None)
    crop = OmegaConf.select(cfg, "data.train_crop_steps", default=None)
    columns = OmegaConf.select(cfg, "data.source.columns", default=None) or {}
    for m, enc in (OmegaConf.select(cfg, "model.encoders", default=None) or {}).items():
        if not isinstance(enc, DictConfig) or not enc.get("cache_dir") or enc.get("freeze") is False:
            continue
        kind = columns.get(m, m)
        settings = augment.get(kind) if isinstance(augment, DictConfig) else None
        augmented = isinstance(settings, DictConfig) and settings != off.get(kind)
        if augmented or crop:
            what = " and ".join(
                w for w, on in ((f"data.augment.{kind}", augmented), ("data.train_crop_steps", crop)) if on
            )
            log.warning(
                "model.encoders.%s keeps a frozen backbone's features per clip, but %s change(s) the clips "
                "every epoch: each is computed and stored anew (set model.encoders.%s.cache_dir=null, or "
                "turn that off)",
                m,
                what,
                m,
            )


def build_datamodule(cfg: DictConfig):
    """Instantiating reads no data: sources load lazily in validate/prepare_data/setup."""
    encoder_data_settings(cfg)
    warn_changing_frozen_inputs(cfg)
    try:
        return hydra.utils.instantiate(cfg.data, _recursive_=True)
    except InstantiationException as err:
        # a source's own config check (a bad key, a pickle without trust): its sentence, not Hydra's wrapper
        if isinstance(err.__cause__, DataError | ConfigError):
            raise err.__cause__ from None
        raise


def _encoder_class(enc: DictConfig, key: str) -> type[Encoder]:
    """What the encoder a config builds declares (`Encoder`'s attributes), read from its class."""
    target = enc.get("_target_") if isinstance(enc, DictConfig) else None
    if not target:
        raise ConfigError(
            f"{key} names no encoder class (_target_): use e.g. +model/encoder@{key}=series_linear"
        )
    try:
        return declared(hydra.utils.get_object(target))
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{key}._target_={target} cannot be imported ({err})") from None


def _kind(modality: str, name: str | None, shape: tuple[int, ...], tokens: bool) -> type[ModalityKind]:
    if name is None:  # data recorded before kinds were (an older checkpoint)
        return modality_kinds.guess(shape, tokens)
    try:
        return modality_kinds.get(name)
    except KeyError:
        raise ConfigError(
            f"the data's modality {modality} is of kind {name!r}, which is not a registered "
            f"modality kind (kinds: {', '.join(modality_kinds.names())})"
        ) from None


def _fit_encoders(
    cfg: DictConfig,
    shapes: dict[str, tuple[int, ...]],
    vocab_sizes: dict[str, int],
    vocabs: dict[str, list[str]],
    kinds: dict[str, str],
    pretrained: bool,
) -> DictConfig:
    """A copy of cfg whose model uses the data's modalities, with sizes only the data knows filled in.

    Encoders for modalities the data lacks are dropped (the defaults name avdigits' audio and video).
    Each encoder's declared size arguments (`Encoder.size_args`) take what its modality's kind gives
    (`ModalityKind.encoder_sizes`: in_features, in_channels, vocab_size) where the config has null; a
    size that contradicts the data, or one the data cannot give, is a config error naming the key. Word
    vectors get the vocabulary's tokens; with `pretrained=False` (the weights come from a checkpoint)
    pretrained files (`Encoder.weight_files`) are not read at all.
    """
    cfg = copy.deepcopy(cfg)
    model = cfg.model
    encoders = model.get("encoders") or {}
    chosen = list(model.get("modalities") or [])
    for m in chosen:
        if m not in shapes:
            raise ConfigError(f"model.modalities names {m!r}, which the data lacks (it has {sorted(shapes)})")
    wanted = chosen or sorted(shapes)
    data_kinds = {m: _kind(m, kinds.get(m), shapes[m], m in vocab_sizes) for m in wanted}
    missing = [m for m in wanted if m not in encoders]
    if missing:
        hint = " ".join(
            f"+model/encoder@model.encoders.{m}={data_kinds[m].suggested_encoder(shapes[m])}" for m in missing
        )
        raise ConfigError(
            f"the data has modalities {missing} with no encoder in model.encoders: add e.g. {hint}"
        )
    with open_dict(model):
        for m in [m for m in encoders if m not in wanted]:
            del model.encoders[m]
        for m in wanted:
            enc, shape, kind = model.encoders[m], shapes[m], data_kinds[m]
            key = f"model.encoders.{m}"
            encoder = _encoder_class(enc, key)
            sizes = kind.encoder_sizes(shape, vocab_sizes.get(m))
            for name in encoder.size_args:
                if name not in sizes:
                    raise ConfigError(
                        f"{key} ({enc._target_.rsplit('.', 1)[-1]}) takes {name}, which {m} "
                        f"({kind.name} data) does not give: use e.g. "
                        f"model/encoder@{key}={kind.suggested_encoder(shape)} (with a leading + "
                        "if it is new)"
                    )
                size = sizes[name]
                given = OmegaConf.select(enc, name, default=None, throw_on_missing=False)
                if given is None or OmegaConf.is_missing(enc, name):
                    enc[name] = size
                elif given != size:
                    raise ConfigError(
                        f"{key}.{name}={given}, but the data has {size} (set it to {size} or null)"
                    )
            for name in encoder.weight_files:
                if enc.get(name) and not pretrained:
                    enc[name] = None
            if enc.get("vectors_path"):
                enc["vocab"] = vocabs.get(m)
    return cfg


def check_pretrained_files(cfg: DictConfig) -> None:
    """Pretrained weight files named in model.encoders must exist (and those an encoder requires must be
    named): checked before any data is read."""
    for m, enc in (OmegaConf.select(cfg, "model.encoders", default=None) or {}).items():
        if not isinstance(enc, DictConfig):
            continue
        encoder = _encoder_class(enc, f"model.encoders.{m}")
        for name in encoder.weight_files:
            value = enc.get(name)
            if not value and name in getattr(encoder, "required_files", ()):
                raise ConfigError(
                    f"model.encoders.{m}.{name} is required: the path of a local weights file for "
                    f"{enc._target_.rsplit('.', 1)[-1]} (nothing is downloaded)"
                )
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"model.encoders.{m}.{name}={value}: no such file")


def build_module(
    cfg: DictConfig, num_classes: int | None = None, datamodule=None, pretrained: bool = True
) -> SequenceClassifier:
    """The LightningModule. With `datamodule`, the task, outputs, modalities and sizes come from the data.

    `pretrained=False` skips reading pretrained weight files: for a model whose weights a checkpoint holds.
    """
    task, meta = "multiclass", None
    if datamodule is not None:
        num_classes, task, meta = datamodule.num_classes, datamodule.task, datamodule.meta()
        vocabs = meta.get("vocab") or {}
        cfg = _fit_encoders(
            cfg,
            dict(datamodule.feature_shapes),
            datamodule.vocab_sizes,
            vocabs,
            meta.get("kinds") or {},
            pretrained,
        )
    try:
        net = hydra.utils.instantiate(cfg.model, num_classes=num_classes)
    except (
        InstantiationException
    ) as err:  # a bad pretrained file or model option: its sentence, not Hydra's wrapper
        if isinstance(err.__cause__, PretrainedError | ConfigError):
            raise ConfigError(str(err.__cause__)) from None
        raise
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    loss = (
        OmegaConf.to_container(cfg.loss, resolve=True) if cfg.get("loss") else {}
    )  # older checkpoints: none
    setting = loss.get("class_weights")
    targets = (
        datamodule.train_targets() if setting == "balanced" and hasattr(datamodule, "train_targets") else None
    )
    weights = loss_class_weights(setting, task, num_classes, targets, (meta or {}).get("classes"))
    if weights is not None:
        log.info("loss.class_weights=%s: %s", setting, [round(w, 4) for w in weights.tolist()])
    module = SequenceClassifier(
        net,
        num_classes=num_classes,
        optimizer=optimizer,
        scheduler=scheduler,
        scheduler_interval=cfg.get("scheduler_interval", "epoch"),
        label_smoothing=float(loss.get("label_smoothing", 0.0)),
        task=task,
        class_weights=weights,
        nonfinite_grad=OmegaConf.select(
            cfg, "nonfinite_grad.action", default="stop"
        ),  # older checkpoints: none
        max_skips_in_a_row=OmegaConf.select(cfg, "nonfinite_grad.max_skips_in_a_row", default=10),
    )
    if meta is not None:
        module.data_meta = meta
    return module


def check_monitors(cfg: DictConfig, task: str) -> None:
    """optimized_metric and the checkpoint monitor must be metrics this task logs (else Lightning fails
    late)."""
    names = metric_names(task)
    metric, mode = DEFAULT_MONITOR[task]
    for key in ("optimized_metric", "callbacks.model_checkpoint.monitor", "callbacks.early_stopping.monitor"):
        value = OmegaConf.select(cfg, key, default=None)
        if value and value not in names:
            raise ConfigError(
                f"{key}={value} is not logged for the {task} task "
                f"(it logs {', '.join(sorted(n for n in names if n.startswith('val/')))}); "
                f"e.g. optimized_metric={metric} callbacks.model_checkpoint.monitor={metric} "
                f"callbacks.model_checkpoint.mode={mode}"
            )
