"""Which MLflow store a run talks to: an explicit URI, else MLFLOW_TRACKING_URI, else a sqlite file."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from gru_mm.paths import PROJECT_ROOT


def resolve_tracking_uri(uri: str | None = None, root: str | Path | None = None) -> str:
    """An explicit URI wins, then MLFLOW_TRACKING_URI, then sqlite:///<root>/mlflow.db (root: the project)."""
    if uri:
        return str(uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(root or PROJECT_ROOT).resolve() / 'mlflow.db'}"


def artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """For a local sqlite store, artifacts live next to it in mlartifacts/; a server decides its own."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts" / experiment_name).as_uri()
    return None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the URI, when a tracking server is down (MLflow's own retries take minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the user's own server)
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
    except (OSError, urllib.error.URLError) as err:
        raise ConnectionError(
            f"MLflow tracking server {tracking_uri} is not reachable ({err}); start it, fix MLFLOW_TRACKING_URI, "
            "or train with logger=csv"
        ) from err
