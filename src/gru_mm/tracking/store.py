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


class TrackingRejected(ConnectionError):
    """The tracking store refused a request for good (HTTP 4xx: bad credentials, a deleted run), so retrying
    cannot help. A ConnectionError, so that entry points report it in one sentence, as an unreachable
    server."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # pickled across processes (ddp_spawn, a sweep's trial)
        return type(self), (str(self), self.status)


def rejected_status(err: BaseException) -> int | None:
    """The HTTP status when `err` is the store refusing a request for good: 4xx, except 408 and 429, which
    mean "try later". None for anything else (an outage, worth retrying)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, TrackingRejected):
        return err.status
    if isinstance(err, urllib.error.HTTPError):
        status = err.code
    elif isinstance(err, MlflowException):
        status = err.get_http_status_code()
    else:
        return None
    return status if 400 <= status < 500 and status not in (408, 429) else None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the URI, when a tracking server is down, or accepts connections and never
    answers (MLflow's own retries take minutes); a 4xx answer (e.g. 401) is a `TrackingRejected`."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:  # `timeout` bounds the connection and each read: a listener that never answers fails in it too
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the user's own server)
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
    except (OSError, urllib.error.URLError) as err:
        if (status := rejected_status(err)) is not None:  # e.g. 401: a server that wants other credentials
            raise TrackingRejected(
                f"MLflow tracking server {tracking_uri} refused the request with HTTP {status} ({err}); "
                "check the credentials (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, "
                "or MLFLOW_TRACKING_TOKEN)",
                status,
            ) from err
        raise ConnectionError(
            f"MLflow tracking server {tracking_uri} is not reachable ({err}); start it, "
            "fix MLFLOW_TRACKING_URI, or train with logger=csv"
        ) from err
