"""`pip install .` (not editable) into a fresh venv, then `gru-mm-train` from another folder: the wheel
carries the configs, and data, logs and mlflow.db land in the working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import BIN, REPO

pytestmark = pytest.mark.slow


def _run(*cmd, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the gru-mm wheel; the torch stack comes from the test venv's site-packages
    (listed in a .pth, so its own .pth files, the editable install among them, are not read)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy, so building writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    shutil.copytree(REPO / "conf", source / "conf", ignore=ignore)
    _run(BIN / "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("gru_mm-*.whl")

    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp).stdout.strip()
    )
    (site / "reuse_test_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(BIN / "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp)
    return venv


def test_an_installed_gru_mm_trains_from_another_folder(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    where = _run(
        installed / "bin" / "python",
        "-c",
        "import gru_mm.paths as p; print(p.__file__); print(p.CONF_DIR)",
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where  # not the checkout's src/ or conf/
    assert (Path(where[1]) / "train.yaml").is_file()

    result = _run(
        installed / "bin" / "gru-mm-train",
        "debug=smoke",
        "test=false",
        "log_model=false",
        cwd=tmp_path,
        env=env | {"PYTHONUNBUFFERED": "1"},
    )
    assert "MLflow: run " in result.stdout + result.stderr  # it got to the end
    assert (
        tmp_path / "mlflow.db"
    ).is_file()  # the store, data and run folders default to the working directory
    assert list((tmp_path / "logs" / "train" / "runs").glob("*/checkpoints/*.ckpt"))
    assert (tmp_path / "data").is_dir()
