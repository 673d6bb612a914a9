"""`hydra/sweeper=optuna` is also the name hydra-optuna-sweeper registers: with both installed, Hydra apps
refuse to start, in one sentence that says what to uninstall (rather than a sweep getting whichever
plugin loaded last)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sweep_testlib import app_command, app_env


def test_hydra_optuna_sweeper_installed_alongside_is_refused(tmp_path: Path):
    # What `pip install hydra-optuna-sweeper` adds to the hydra_plugins namespace (its package, here empty).
    other = tmp_path / "site" / "hydra_plugins" / "hydra_optuna_sweeper"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    env = app_env(tmp_path)
    env["PYTHONPATH"] = str(tmp_path / "site")
    proc = subprocess.run(app_command(tmp_path / "sweep", "hydra.sweeper.n_trials=1"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "gru-mm: hydra-optuna-sweeper (hydra_plugins.hydra_optuna_sweeper) is installed next to "
        "gru-mm's Optuna sweeper and both register hydra/sweeper=optuna; uninstall it "
        "(`pip uninstall hydra-optuna-sweeper`: it needs optuna<3, gru-mm's sweeper optuna>=4)."
    ]
    assert not (tmp_path / "sweep").exists(), "refused before anything ran"
