"""Where the project lives on disk, found once from this file's location."""

from pathlib import Path

# src/gru_mm/paths.py -> the repository root (the package is installed editable from src/).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
