"""The one error type of checkpoint handling (kept apart so every checkpoint module can raise it)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, not gru-mm's, or not to be trusted."""
