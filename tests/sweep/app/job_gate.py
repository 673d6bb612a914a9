"""A Hydra callback that holds each job at its start until the test lets it go, so a test can act (stop a
server, start it again) between one trial's end and the next one's start, by construction rather than by
timing.

    +hydra.callbacks.gate._target_=job_gate.JobGate +hydra.callbacks.gate.folder=DIR

Before job N runs, the callback writes DIR/started-N and waits for DIR/go-N (the test writes it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class JobGate(Callback):
    def __init__(self, folder: str, timeout_s: float = 600) -> None:
        self.folder, self.timeout_s = Path(folder), timeout_s

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        number = config.hydra.job.num
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"started-{number}").touch()
        deadline = time.monotonic() + self.timeout_s
        while not (self.folder / f"go-{number}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {number}: the test never wrote {self.folder / f'go-{number}'}")
            time.sleep(0.1)
