"""An empty, migrated MLflow sqlite store, copied to where a test's CLI run would create its own.

MLflow creates a new sqlite store by running all its schema migrations: about 3 s of CPU per file (6.5 s on
the loaded 2-core VM), and nearly every CLI test starts from a new project root. A copy of one made earlier
in the session is the same empty store (only the Default experiment), so the runs still create their
experiments, runs and models in a real store. Runs logging elsewhere (MLFLOW_TRACKING_URI, a `logger=` or
`logger.mlflow.tracking_uri=` override) get nothing.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_TEMPLATE: Path | None = None


def template() -> Path:
    global _TEMPLATE
    if _TEMPLATE is None:
        from mlflow.tracking import MlflowClient

        folder = tempfile.mkdtemp(prefix="gru-mm-mlflow-template-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = Path(folder) / "mlflow.db"
        MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates it
        _TEMPLATE = path
    return _TEMPLATE


def seed(command: list[str], env: dict[str, str]) -> None:
    """Copy the template to `<paths.root>/mlflow.db` when `command` would create that store."""
    args = [str(a) for a in command]
    if env.get("MLFLOW_TRACKING_URI") or any(a.startswith(("logger=", "logger.mlflow.")) for a in args):
        return
    roots = [a.split("=", 1)[1] for a in args if a.startswith("paths.root=")]
    if not roots:
        return
    store = Path(roots[-1]) / "mlflow.db"
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template(), store)
