"""Where the project lives on disk, found once from this file's location.

From a checkout (src/gru_mm/paths.py next to conf/ and pyproject.toml), the configs are the checkout's
conf/ and data, logs and mlflow.db default to the repository root. From an installed wheel, the configs
are the copy packed into gru_mm/conf (see setup.py) and those folders default to the working directory.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parents[1]
IN_CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "conf").is_dir()

PROJECT_ROOT = _CHECKOUT if IN_CHECKOUT else Path.cwd()
CONF_DIR = _CHECKOUT / "conf" if IN_CHECKOUT else _PACKAGE / "conf"


def stem_or(path: str | None, default: str) -> str:
    """A file's name without folder and suffix (`data/my_recordings.csv` -> `my_recordings`), else
    `default`."""
    return Path(path).stem if path else default
