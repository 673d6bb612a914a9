"""Wrong config values fail before any data is read, naming the key."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from conftest import run_cli
from gru_mm.config import ConfigError, check_config, register_resolvers
from gru_mm.paths import CONF_DIR
from gru_mm.schema import SCHEMAS

register_resolvers()


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_default_config_is_valid():
    cfg = _compose("paths.output_dir=/tmp/x")
    check_config(cfg)
    assert cfg.model.gru.hidden_size > 0


@pytest.mark.parametrize("path", sorted(CONF_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF_DIR)))
def test_every_field_has_a_one_line_comment_and_lines_are_short(path):
    """A field's comment ends its line, or, when that would pass 110 characters, sits on the line above."""
    block_indent = None  # inside a YAML block scalar (|-): its text lines are not fields
    above = ""  # the previous line
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        assert len(line) <= 110, f"{path}:{lineno} is {len(line)} characters long (move its comment above it)"
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None and (not stripped or indent > block_indent):
            continue
        block_indent = indent if line.split("#")[0].rstrip().endswith(("|", "|-")) else None
        previous, above = above, line
        # Hydra's own directives (_target_, _partial_) and section headers explain themselves
        if not stripped or stripped.startswith(("#", "- ", "_")) or stripped.endswith(":"):
            continue
        comment_above = previous.strip().startswith("#") and len(previous) - len(previous.lstrip()) == indent
        assert "#" in line or comment_above, (
            f"{path}:{lineno} has no comment (at its end or on the line above)"
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=-4", "data.batch_size must be >= 1"),
        ("model.gru.hidden_size=0", "model.gru.hidden_size must be >= 1"),
        ("model.gru.dropout=1.5", "model.gru.dropout must be < 1.0"),
        ("model.gru.cell=lstm", "model.gru.cell must be one of torch, cho2014, got 'lstm'"),
        ("model.modality_dropout=1.0", "model.modality_dropout must be < 1.0"),
        ("model.head.dropout=-0.5", "model.head.dropout must be >= 0.0"),
        ("model/fusion=lmf model.fusion.rank=0", "model.fusion.rank must be >= 1"),
        ("optimizer.lr=-0.1", "optimizer.lr must be >= 0.0"),
        ("optimizer.lr=inf", "optimizer.lr must be finite"),
        ("model.gru._target_=gru_mm.nn.NoSuchGRU", "model.gru._target_"),
        ("data.train_crop_steps=0", "data.train_crop_steps must be >= 1"),
        ("loss.label_smoothing=1.0", "loss.label_smoothing must be < 1.0"),
        ("lr_find.steps=1", "lr_find.steps must be >= 2"),
        ("lr_find.min_lr=0.1 lr_find.max_lr=0.01", "lr_find.min_lr=0.1 must be below lr_find.max_lr=0.01"),
        ("seed=-1", "seed must be an integer in [0, 2**32)"),
        ("callbacks.system_metrics.interval_s=0", "callbacks.system_metrics.interval_s must be >= 0.1"),
        # Lightning's Trainer refuses these when it is built, which check_config does before any data is read
        ("trainer.precision=33", "trainer.precision=33: Precision 33 is invalid"),
        ("trainer.devices=0", "trainer.devices=0:"),
        ("trainer.accelerator=abacus", "trainer.accelerator=abacus:"),
        ("trainer.max_epochs=-2", "trainer.max_epochs=-2:"),
        ("trainer.gradient_clip_algorithm=sideways", "trainer.gradient_clip_algorithm=sideways:"),
        # ... and these only once training runs
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer >= 1"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val must be null or a number >= 0"),
    ],
)
def test_bad_values_name_the_key(override, message):
    cfg = _compose("paths.output_dir=/tmp/x", *override.split())
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("override", ["trainer=gpu", "trainer=ddp", "trainer.accelerator=cuda"])
def test_gpu_trainer_without_a_gpu_is_refused(override):
    with pytest.raises(ConfigError, match=r"^trainer\.accelerator=(gpu|cuda) needs a GPU"):
        check_config(_compose("paths.output_dir=/tmp/x", override))


def _bounded_fields(schema) -> list[tuple[str, dict]]:
    return [
        (f.name, f.metadata)
        for f in dataclasses.fields(schema)
        if any(v is not None for v in f.metadata.values())
    ]


def _out_of_bounds(bounds: dict, kind: type):
    if bounds["choices"] is not None:
        return "nosuch"
    if bounds["ge"] is not None:
        return kind(bounds["ge"] - 1) if kind is int else bounds["ge"] / 2 - 1
    return kind(bounds["lt"] if bounds["lt"] is not None else bounds["le"] + 1)


@pytest.mark.parametrize("path", sorted(SCHEMAS))
def test_every_bound_in_every_schema_is_enforced_with_its_full_key(path):
    """A bound declared on a schema field is checked wherever that schema's node sits in the config."""
    schema = SCHEMAS[path]
    group, _, option = path.rpartition("/")
    override = [f"{group}={option}"] if group in ("data", "model/fusion") else []
    override += ["data.path=x.csv"] if path in ("data/manifest", "data/features") else []
    cfg = _compose("paths.output_dir=/tmp/x", *override)
    nodes = [key for key, node in _walk(cfg, "") if OmegaConf.get_type(node) is schema]
    assert nodes, f"no node of conf/ follows schema/{path}"
    for name, bounds in _bounded_fields(schema):
        key = f"{nodes[0]}.{name}"
        kind = {int: int, int | None: int, str: str}.get(typing.get_type_hints(schema)[name], float)
        bad = _out_of_bounds(bounds, kind)
        with pytest.raises(ConfigError, match=f"^{re.escape(key)} must be"):
            check_config(_compose("paths.output_dir=/tmp/x", *override, f"{key}={bad}"))


def _walk(node, path):
    if isinstance(node, DictConfig) and not node._is_none():
        yield path, node
        for k in node:
            yield from _walk(node._get_node(k), f"{path}.{k}" if path else str(k))


@pytest.mark.parametrize(
    "override",
    [
        "data.batch_size=abc",
        "model.gru.hidden_size=1.5",
        "data.bucket=maybe",
        "lr_find.enabled=maybe",
        "model/fusion=lmf model.fusion.rank=four",
        "optimizer.lr=fast",
    ],
)
def test_wrong_types_are_refused_by_composition_naming_the_key(override):
    key = override.split()[-1].split("=")[0]
    with pytest.raises(ConfigCompositionException) as err:
        _compose("paths.output_dir=/tmp/x", *override.split())
    assert f"full_key: {key}" in str(err.value.__cause__)


def test_a_key_its_schema_lacks_is_refused_by_composition():
    with pytest.raises(ConfigCompositionException, match="gru_size"):
        _compose("paths.output_dir=/tmp/x", "model.gru.gru_size=8")
    # a `+` key is the user's own argument for a swapped-in class: allowed, as without a schema
    cfg = _compose("paths.output_dir=/tmp/x", "optimizer._target_=torch.optim.SGD", "+optimizer.momentum=0.9")
    check_config(cfg)
    assert cfg.optimizer.momentum == 0.9


GROUPS = ["data", "model/fusion", "model/gru", "trainer", "callbacks", "logger", "debug", "experiment"]


@pytest.mark.parametrize(
    "override",
    [f"{group}={path.stem}" for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))],
)
def test_every_shipped_option_composes_under_its_schema(override):
    extra = ["data.path=x.csv"] if override in ("data=manifest", "data=features") else []
    cfg = _compose("paths.output_dir=/tmp/x", override, *extra)
    if cfg.trainer.accelerator == "cpu" or torch.cuda.is_available():
        check_config(cfg)


def test_unknown_key_and_unknown_choice_are_refused_by_composition():
    with pytest.raises(ConfigCompositionException, match="hiden_size"):
        _compose("model.gru.hiden_size=8")
    with pytest.raises((ConfigCompositionException, MissingConfigException), match="nosuch"):
        _compose("model/fusion=nosuch")


@pytest.mark.slow  # two CLI starts: ~16 s of CPU
def test_cli_fails_before_reading_data(isolated_root):
    result = run_cli("gru-mm-train", "data.batch_size=-1", f"paths.root={isolated_root}")
    assert result.returncode != 0
    assert "data.batch_size must be >= 1, got -1" in result.stderr
    assert not (isolated_root / "data").exists(), "data was generated before the config was checked"
    result = run_cli("gru-mm-train", "trainer.max_epoch=3", f"paths.root={isolated_root}")
    assert result.returncode != 0
    assert "max_epoch" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_gpu_trainer_without_a_gpu_fails_before_any_data_is_read(isolated_root):
    result = run_cli("gru-mm-train", "trainer=gpu", f"paths.root={isolated_root}")
    assert result.returncode != 0
    assert (
        result.stderr.strip().splitlines()[-1].startswith("gru-mm-train: trainer.accelerator=gpu needs a GPU")
    )
    assert not (isolated_root / "data").exists(), "avdigits was generated before the trainer was checked"


@pytest.mark.slow
def test_cli_bad_precision_fails_before_a_manifest_is_read(isolated_root):
    """The manifest's media do not exist: reading it would fail on them, so the trainer's error shows it
    was not."""
    manifest = isolated_root / "manifest.csv"
    manifest.write_text("id,label,audio\n" + "".join(f"c{i},{i % 2},missing/c{i}.wav\n" for i in range(8)))
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={manifest}",
        "trainer.precision=33",
        f"paths.root={isolated_root}",
        "logger=none",
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("gru-mm-train: trainer.precision=33: Precision 33 is invalid")
    ), result.stderr[-2000:]
    assert "missing/c0.wav" not in result.stderr
    assert not (isolated_root / "data").exists(), "the manifest was decoded before the trainer was checked"


def test_overrides_compose():
    cfg = _compose(
        "paths.output_dir=/tmp/x", "model.gru.hidden_size=32", "trainer.max_epochs=1", "data.batch_size=16"
    )
    assert (cfg.model.gru.hidden_size, cfg.trainer.max_epochs, cfg.data.batch_size) == (32, 1, 16)
    assert OmegaConf.select(cfg, "scheduler.T_max") == 1


@pytest.mark.slow  # a CLI start each: 8-10 s of CPU
@pytest.mark.parametrize("command", ["gru-mm-train", "gru-mm-eval", "gru-mm-predict", "gru-mm-validate-data"])
def test_every_command_explains_itself_in_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"{command}: ")  # its own header, not "app is powered by Hydra"
    assert f"Examples:\n  {command} " in result.stdout
