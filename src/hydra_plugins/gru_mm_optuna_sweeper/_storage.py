"""Storage strings (what trials receive as trial.storage) -> Optuna storages."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import optuna

JOURNAL = "journal:"
PRUNER_ATTR = "gru_mm.pruner"  # study user attr: the pruner config the OptunaPruning callback builds


def resolve_storage_url(storage: str | None, sweep_dir: Path) -> str:
    """null -> sqlite file in the sweep dir; journal:PATH with PATH made absolute; a URL unchanged."""
    if storage is None or storage == "":
        return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    if storage.startswith(JOURNAL):
        path = Path(storage.removeprefix(JOURNAL)).expanduser()
        if not path.is_absolute():
            path = sweep_dir / path
        return f"{JOURNAL}{path.resolve()}"
    if "://" not in storage:
        raise ValueError(
            f"hydra.sweeper.storage must be null, a database URL (sqlite:///PATH, postgresql://...) "
            f"or journal:PATH, got '{storage}'."
        )
    return storage


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # The sweeper and pruning callbacks in the trial processes write to one file: wait for its lock.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


# user:password@ in a URL (a password may not hold an unencoded '/', '@' or space), and secret query
# arguments.
_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")
_QUERY_SECRET = re.compile(
    r"([?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key)=)[^&;#\s'\"]*", re.IGNORECASE
)
SECRET_ENV = "GRU_MM_SWEEP_STORAGE"  # the storage URL itself, when it holds a password (never in an override)


def redact(text: str) -> str:
    """Passwords in the URLs of a text (storage and tracking URLs, commands, messages) replaced by ***."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", text))


def redact_values(values: dict) -> dict:
    """A dict of params or tags with the passwords in its string values redacted."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}


def redact_log_records() -> None:
    """From now on no log record of this process holds a password of a URL: records are redacted as they are
    made, so this holds whatever handlers Hydra sets up for each job (and for the launcher's lines)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it when it is emitted
            return record
        if "@" in message or "=" in message:
            redacted = redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return record

    make_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
