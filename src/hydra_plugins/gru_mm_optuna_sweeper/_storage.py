"""Storage strings (what trials receive as trial.storage) -> Optuna storages."""

from __future__ import annotations

import re
from pathlib import Path

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


def redact(url: str) -> str:
    """The URL without a password, for logs and MLflow tags."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
