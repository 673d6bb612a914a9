"""What a crafted checkpoint tries to run: each leaves a marker file, so a test can tell that it never ran.

Importable by the CLI subprocesses of tests/faults (their PYTHONPATH holds this folder)."""

from __future__ import annotations

import os
from pathlib import Path

MARKER_ENV = "GRU_MM_TEST_MARKER"


def write_marker(*args, **kwargs):
    """A `_target_` off the allow-list: instantiating it writes the marker file named by
    $GRU_MM_TEST_MARKER."""
    Path(os.environ[MARKER_ENV]).write_text("a crafted checkpoint's _target_ ran\n")


class PickleBomb:
    """Unpickling this (torch.load with weights_only=False) writes `path`: code run from a file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pickled code ran\n"))
