"""Loading a checkpoint runs no code from it: crafted checkpoints are refused by every loader, unrun."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import pytest
import torch
from faults_testlib import FAST, craft, run
from marker_target import MARKER_ENV, PickleBomb

from gru_mm.checkpoints import CheckpointError, trust
from gru_mm.serving.predictor import Predictor

FOREIGN = "marker_target.write_marker"  # importable in the CLIs below, and off the allow-list


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory) -> Path:
    """The best checkpoint of a real one-epoch training run."""
    root = tmp_path_factory.mktemp("trained")
    result = run("gru-mm-train", *FAST, f"paths.root={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    return next(root.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))


def _foreign_optimizer(ckpt: dict) -> None:
    # not partial: a plain instantiate would call it at once, while the model is being built
    ckpt["gru_mm"]["config"]["optimizer"] = {"_target_": FOREIGN, "lr": 0.1}


def test_the_crafted_target_is_live_when_instantiated_without_the_check(tmp_path, monkeypatch):
    """The payload the tests below use does run if anything instantiates it: their 'no marker' means
    something."""
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    hydra.utils.instantiate({"_target_": FOREIGN, "lr": 0.1})
    assert marker.is_file()


@pytest.mark.slow
def test_predictor_refuses_a_foreign_target_before_building_anything(real_ckpt, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    crafted = craft(real_ckpt, tmp_path / "crafted.ckpt", _foreign_optimizer)
    with pytest.raises(CheckpointError, match=r"optimizer\._target_ = 'marker_target\.write_marker'"):
        Predictor.from_checkpoint(crafted)
    shell = craft(
        real_ckpt,
        tmp_path / "shell.ckpt",
        lambda c: c["gru_mm"]["config"]["model"]["head"].update(
            _target_="os.system", _args_=[f"touch {marker}"]
        ),
    )
    with pytest.raises(CheckpointError, match=r"model\.head\._target_ = 'os\.system'"):
        Predictor.from_checkpoint(shell)
    assert not marker.exists()
    Predictor.from_checkpoint(real_ckpt)  # the real one loads


@pytest.mark.parametrize(
    "target",
    [
        "os.system",
        "builtins.exec",
        "torch.nn.functional.torch.load",  # an alias out of an allowed package
        "gru_mm.checkpoints.io.torch.load",
        "torch.optim.AdamW.__init__",
        "subprocess.run",
    ],
)
def test_the_allow_list_refuses_what_could_run_anything(target):
    assert not trust.allowed(target)


def test_trusted_targets_are_the_loading_commands_decision_never_the_checkpoints():
    saved = {
        "callbacks": {"mine": {"_target_": "marker_target.write_marker"}},
        "trusted_targets": ["marker_target"],
    }
    with pytest.raises(CheckpointError, match=r"callbacks\.mine\._target_ = 'marker_target.write_marker'"):
        trust.check_config(saved, "x.ckpt")  # the checkpoint's own trusted_targets vouch for nothing
    trust.check_config(saved, "x.ckpt", extra=("marker_target",))  # the user's command trusts the package
    assert not trust.allowed("marker_target.os.system", extra=("marker_target",))  # still no aliases out
    assert not trust.allowed("marker_targets.write_marker", extra=("marker_target",))  # a prefix, not a stem


def test_every_target_of_the_projects_own_configs_is_allowed():
    """A checkpoint of any config in conf/ loads: the allow-list keeps up with conf/ (launchers are hydra's,
    never saved in a checkpoint)."""
    conf = Path(trust.__file__).resolve().parents[3] / "conf"
    targets = {
        line.split("_target_:")[1].split("#")[0].strip()
        for f in conf.rglob("*.yaml")
        if "launcher" not in f.parts
        for line in f.read_text().splitlines()
        if "_target_:" in line
    }
    assert len(targets) > 10 and not [t for t in sorted(targets) if not trust.allowed(t)]


@pytest.mark.slow
def test_the_clis_refuse_a_crafted_checkpoint_and_run_none_of_it(real_ckpt, tmp_path):
    marker = tmp_path / "marker"
    env = {MARKER_ENV: str(marker)}
    crafted = craft(real_ckpt, tmp_path / "crafted.ckpt", _foreign_optimizer)
    # a crafted run folder's last.ckpt, found by ckpt_path=last
    last = craft(real_ckpt, tmp_path / "logs/train/runs/crafted/checkpoints/last.ckpt", _foreign_optimizer)
    root = f"paths.root={tmp_path}"
    commands = {
        "predict": ("gru-mm-predict", f"ckpt_path={crafted}", f"data_path={tmp_path / 'new.csv'}", root),
        "eval": ("gru-mm-eval", f"ckpt_path={crafted}", root),
        "eval last": ("gru-mm-eval", "ckpt_path=last", "experiment_name=avdigits", root),
        "resume": ("gru-mm-train", *FAST, f"ckpt_path={crafted}", root),
        "resume last": ("gru-mm-train", *FAST, "ckpt_path=last", root),
    }
    for what, (command, *args) in commands.items():
        result = run(command, *args, env=env)
        where = last if "last" in what else crafted
        assert result.returncode == 1 and "Traceback" not in result.stderr, (what, result.stderr[-2000:])
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(
            f"{command}: {where}: its config names optimizer._target_ = "
            f"'{FOREIGN}', which a checkpoint may not build"
        ), (what, line)
        assert not marker.exists(), what


@pytest.mark.slow
def test_the_mlflow_model_refuses_a_crafted_checkpoint(real_ckpt, tmp_path, monkeypatch):
    import mlflow.pyfunc

    from gru_mm.serving.mlflow_model import save_model

    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    model_dir = save_model(real_ckpt, tmp_path / "model")
    assert mlflow.pyfunc.load_model(str(model_dir)) is not None  # the real one loads
    (data,) = model_dir.glob("data/*.ckpt")
    craft(data, data, _foreign_optimizer)
    with pytest.raises(CheckpointError, match=r"optimizer\._target_ = 'marker_target\.write_marker'"):
        mlflow.pyfunc.load_model(str(model_dir))
    bombed = tmp_path / "bombed"
    shutil.copytree(model_dir, bombed)
    (data,) = bombed.glob("data/*.ckpt")
    torch.save({"state_dict": {}, "gru_mm": {"config": {}}, "bomb": PickleBomb(str(marker))}, data)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        mlflow.pyfunc.load_model(str(bombed))
    assert not marker.exists()


def _bomb(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"gru_mm": {"experiment_name": "avdigits", "config": {}}, "bomb": PickleBomb(str(marker))}, path
    )
    return path


def test_a_crafted_pickle_is_live_when_unpickled_without_weights_only(tmp_path):
    control = tmp_path / "control"
    torch.load(_bomb(tmp_path / "bomb.ckpt", control), weights_only=False)
    assert control.is_file()


@pytest.mark.slow
def test_a_crafted_pickle_in_last_ckpt_does_not_run(tmp_path):
    marker = tmp_path / "marker"
    last = _bomb(tmp_path / "logs/train/runs/crafted/checkpoints/last.ckpt", marker)
    for command, *args in (
        ("gru-mm-train", *FAST, "ckpt_path=last"),
        ("gru-mm-eval", "ckpt_path=last", "experiment_name=avdigits"),
        ("gru-mm-predict", f"ckpt_path={last}", f"data_path={tmp_path / 'x.csv'}"),
    ):
        result = run(command, *args, f"paths.root={tmp_path}")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"{command}: {last}: not a readable checkpoint" in result.stderr
        assert not marker.exists(), command


@pytest.mark.slow
def test_a_corrupt_last_ckpt_is_an_error_naming_it_not_a_fall_back_to_an_older_run(real_ckpt, tmp_path):
    older = tmp_path / "logs/train/runs/older/checkpoints/last.ckpt"
    older.parent.mkdir(parents=True)
    shutil.copy(real_ckpt, older)
    newer = tmp_path / "logs/train/runs/newer/checkpoints/last.ckpt"
    newer.parent.mkdir(parents=True)
    newer.write_bytes(real_ckpt.read_bytes()[:5000])  # cut short, as a kill during a plain write would
    result = run("gru-mm-train", *FAST, "ckpt_path=last", f"paths.root={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"gru-mm-train: {newer}: not a readable checkpoint" in result.stderr
    assert not list(older.parent.glob("epoch*"))  # nothing resumed it
