"""Packs the repository's conf/ into the wheel as gru_mm/conf, so an installed gru-mm finds its configs
(the project's metadata is in pyproject.toml; conf/ stays at the root, where the commands and docs name it)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


def _not_yaml(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".yaml") and not (Path(folder) / n).is_dir()]


class BuildWithConf(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install reads the checkout's conf/ (gru_mm.paths)
            target = Path(self.build_lib) / "gru_mm" / "conf"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(CONF, target, ignore=_not_yaml)


setup(cmdclass={"build_py": BuildWithConf})
