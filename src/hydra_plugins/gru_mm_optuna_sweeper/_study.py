"""The study's bookkeeping: which trials count, recovering trials a killed sweep left RUNNING, telling results.

A trial left RUNNING by a sweep that died (its pid is gone on this host; no heartbeat for stale_after_s from
another host) is marked FAIL with user attr `interrupted=True` (it then does not
count toward n_trials) and its parameters are enqueued again (`retry_of=<its number>`), so no trial number is
reused and none is counted twice. With the grid sampler the grid point is released instead of enqueued.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

OWNER = "gru_mm.sweeper"  # user attr: host:pid of the sweeper that asked the trial
HEARTBEAT = "gru_mm.heartbeat"  # user attr: unix time, refreshed by that sweeper while the trial runs
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"
ERROR = "error"


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def counts_as_finished(t: FrozenTrial) -> bool:
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED, False)


def n_finished(study: optuna.Study) -> int:
    return sum(counts_as_finished(t) for t in study.get_trials(deepcopy=False))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweeper_alive(t: FrozenTrial, stale_after_s: float, now: float | None = None) -> bool:
    """Whether the sweeper that asked this RUNNING trial still lives: its pid on this host, its heartbeat elsewhere."""
    now = time.time() if now is None else now
    owner = t.user_attrs.get(OWNER)
    if owner == owner_id():
        return True
    if owner is None:  # between ask() and set_user_attr(OWNER) of a live sweeper, or asked by hand
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        return now - started < stale_after_s
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))
    return now - float(t.user_attrs.get(HEARTBEAT, 0.0)) < stale_after_s


class Heartbeat:
    """While a batch runs, stamp its trials every `interval_s` so sweepers on other hosts see them alive."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: list[int], interval_s: float):
        self.storage, self.trial_ids, self.interval_s = storage, trial_ids, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-sweeper-heartbeat", daemon=True)

    def beat(self) -> None:
        for trial_id in self.trial_ids:
            with contextlib.suppress(Exception):  # a trial told meanwhile cannot take attrs any more
                self.storage.set_trial_user_attr(trial_id, HEARTBEAT, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def recover_interrupted(
    study: optuna.Study, storage: optuna.storages.BaseStorage, grid: bool, stale_after_s: float
) -> list[int]:
    """Fail and re-enqueue trials left RUNNING by a dead sweep; returns their numbers."""
    study_id = storage.get_study_id_from_name(study.study_name)
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if sweeper_alive(t, stale_after_s):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        if grid and "grid_id" in t.system_attrs:
            storage.set_trial_system_attr(trial_id, "grid_id", -1)  # the grid point counts as unvisited again
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        if not grid:
            study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF: t.number})
        numbers.append(t.number)
    if numbers:
        log.info(f"Trials {numbers} were left running by an interrupted sweep: marked FAIL and retried.")
    return numbers


def objective_values(value: Any, n_objectives: int, metric: str | Sequence[str] | None) -> list[float]:
    """The task's return value as a list of floats; raises ValueError naming what is wrong."""
    returned = value
    if metric is not None and isinstance(value, Mapping):
        keys = [metric] if isinstance(metric, str) else list(metric)
        missing = [k for k in keys if k not in value]
        if missing:
            raise ValueError(f"the task returned no {missing} (hydra.sweeper.metric); it has {sorted(value)}")
        value = [value[k] for k in keys]
    if n_objectives == 1 and not isinstance(value, Sequence | Mapping):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n_objectives:
        raise ValueError(f"the task must return {n_objectives} number(s), got {returned!r}")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"the task must return {n_objectives} number(s), got {returned!r}") from None


def record(study: optuna.Study, trial: optuna.Trial, ret: Any, metric: Any) -> TrialState:
    """Tell the study how a Hydra JobReturn ended: COMPLETE, PRUNED, or FAIL (exception, NaN, bad value)."""
    try:
        values = objective_values(ret.return_value, len(study.directions), metric)
        error = "the objective is NaN" if any(math.isnan(v) for v in values) else None
    except optuna.TrialPruned:
        return _tell(study, trial, TrialState.PRUNED)
    except Exception as e:  # the task's own exception, re-raised by JobReturn.return_value
        values, error = None, f"{type(e).__name__}: {e}"
    if error is not None:
        log.warning(f"Trial {trial.number} failed: {error}")
        trial.set_user_attr(ERROR, error[:1000])
        return _tell(study, trial, TrialState.FAIL)
    return _tell(study, trial, TrialState.COMPLETE, values)


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, values: list[float] | None = None):
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as e:
        # GridSampler calls study.stop() once the grid is covered; the trial is stored before it raises.
        if "Study.stop" not in str(e):
            raise
    return state
