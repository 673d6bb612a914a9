"""The modality kinds a manifest knows, by name: a column of that name, or one declared in
`data.source.columns: {column: name}`."""

from __future__ import annotations

from gru_mm.data.kinds.base import ModalityKind

_KINDS: dict[str, type[ModalityKind]] = {}


def register(kind: type[ModalityKind]) -> type[ModalityKind]:
    """Make `kind` known by its name (a later kind of the same name replaces it); returns it (a decorator)."""
    if not kind.name or not kind.name.isidentifier():
        raise ValueError(
            f"{kind.__name__}.name must be a word usable as a column and config key, got {kind.name!r}"
        )
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered kinds' names, in the order they were registered."""
    return tuple(_KINDS)


def get(name: str) -> type[ModalityKind]:
    if name not in _KINDS:
        raise KeyError(f"{name!r} is not a modality kind (kinds: {', '.join(_KINDS)})")
    return _KINDS[name]


def guess(shape: tuple[int, ...], tokens: bool) -> type[ModalityKind]:
    """The kind of data recorded before kinds were (old checkpoints): token ids are text, images frames."""
    return _KINDS["text" if tokens else "frames" if len(shape) == 3 else "series"]
