"""Wrong config values fail before any data is read, naming the key."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from conftest import run_cli
from gru_mm.config import ConfigError, check_config, register_resolvers
from gru_mm.paths import CONF_DIR

register_resolvers()


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_default_config_is_valid_and_commented():
    cfg = _compose("paths.output_dir=/tmp/x")
    check_config(cfg)
    assert cfg.model.gru.hidden_size > 0
    # every field in every config file has a one-line comment
    for path in CONF_DIR.rglob("*.yaml"):
        block_indent = None  # inside a YAML block scalar (|-): its text lines are not fields
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if block_indent is not None and (not stripped or indent > block_indent):
                continue
            block_indent = indent if line.split("#")[0].rstrip().endswith(("|", "|-")) else None
            # Hydra's own directives (_target_, _partial_) and section headers explain themselves
            if not stripped or stripped.startswith(("#", "- ", "_")) or stripped.endswith(":"):
                continue
            assert "#" in line, f"{path}:{lineno} has no comment"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=-4", "data.batch_size must be >= 1"),
        ("data.batch_size=abc", "data.batch_size must be an integer"),
        ("model.gru.hidden_size=0", "model.gru.hidden_size must be >= 1"),
        ("model.gru.dropout=1.5", "model.gru.dropout must be <= 1.0"),
        ("model.modality_dropout=1.0", "model.modality_dropout must be < 1.0"),
        ("model/fusion=lmf model.fusion.rank=0", "model.fusion.rank must be >= 1"),
        ("optimizer.lr=-0.1", "optimizer.lr must be >= 0.0"),
        ("data.bucket=maybe", "data.bucket must be true or false"),
        ("model.gru._target_=gru_mm.nn.NoSuchGRU", "model.gru._target_"),
        ("data.train_crop_steps=0", "data.train_crop_steps must be >= 1"),
        ("loss.label_smoothing=1.0", "loss.label_smoothing must be < 1.0"),
        ("lr_find.steps=1", "lr_find.steps must be >= 2"),
        ("lr_find.min_lr=0.1 lr_find.max_lr=0.01", "lr_find.min_lr=0.1 must be below lr_find.max_lr=0.01"),
        ("lr_find.enabled=yes", "lr_find.enabled must be true or false"),
    ],
)
def test_bad_values_name_the_key(override, message):
    cfg = _compose("paths.output_dir=/tmp/x", *override.split())
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_config(cfg)


def test_unknown_key_and_unknown_choice_are_refused_by_composition():
    with pytest.raises(ConfigCompositionException, match="hiden_size"):
        _compose("model.gru.hiden_size=8")
    with pytest.raises((ConfigCompositionException, MissingConfigException), match="nosuch"):
        _compose("model/fusion=nosuch")


def test_cli_fails_before_reading_data(isolated_root):
    result = run_cli("gru-mm-train", "data.batch_size=-1", f"paths.root={isolated_root}")
    assert result.returncode != 0
    assert "data.batch_size must be >= 1, got -1" in result.stderr
    assert not (isolated_root / "data").exists(), "data was generated before the config was checked"
    result = run_cli("gru-mm-train", "trainer.max_epoch=3", f"paths.root={isolated_root}")
    assert result.returncode != 0
    assert "max_epoch" in result.stderr


def test_overrides_compose():
    cfg = _compose("paths.output_dir=/tmp/x", "model.gru.hidden_size=32", "trainer.max_epochs=1", "data.batch_size=16")
    assert (cfg.model.gru.hidden_size, cfg.trainer.max_epochs, cfg.data.batch_size) == (32, 1, 16)
    assert OmegaConf.select(cfg, "scheduler.T_max") == 1


@pytest.mark.parametrize("command", ["gru-mm-train", "gru-mm-eval", "gru-mm-predict", "gru-mm-validate-data"])
def test_every_command_explains_itself_in_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"{command}: ")  # its own header, not "app is powered by Hydra"
    assert f"Examples:\n  {command} " in result.stdout
