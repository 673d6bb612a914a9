"""The study's bookkeeping: which trials count, recovering trials a killed sweep left RUNNING, telling
results.

A trial left RUNNING by a sweep that died (its pid is gone on this host; no heartbeat for stale_after_s from
another host) is marked FAIL with user attr `interrupted=True` and its parameters are enqueued again
(`retry_of=<its number>`; with the grid sampler the grid point is released instead); a trial that failed
with a ConnectionError (a tracking server or database briefly away) is retried the same way. A retried
trial has user attr `retried=True` and does not count toward n_trials, so no trial number is reused and
none is counted twice. A parameter set that failed `max_retries + 1` times is not retried again: its
last trial counts as a finished FAIL, so a trial that kills its sweeper every time cannot make the sweep
re-run it forever.
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

from ._storage import redact

log = logging.getLogger(__name__)

OWNER = "gru_mm.sweeper"  # user attr: host:pid of the sweeper that asked the trial
HEARTBEAT = "gru_mm.heartbeat"  # user attr: unix time, refreshed by that sweeper while the trial runs
INTERRUPTED = "interrupted"
RETRIED = (
    "retried"  # user attr: True when this failed trial's parameters were enqueued again (it does not count)
)
RETRY_OF = "retry_of"
ERROR = "error"
TRANSIENT = (ConnectionError, TimeoutError)  # failures worth retrying: the same trial may pass a moment later


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def counts_as_finished(t: FrozenTrial) -> bool:
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    # Studies of older versions have interrupted=True without `retried`: those were all retried.
    return t.state == TrialState.FAIL and not t.user_attrs.get(RETRIED, t.user_attrs.get(INTERRUPTED, False))


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
    """Whether the sweeper that asked this RUNNING trial still lives: its pid on this host, its heartbeat
    elsewhere."""
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
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    grid: bool,
    stale_after_s: float,
    max_retries: int = 2,
) -> list[int]:
    """Fail (and retry, up to max_retries) trials left RUNNING by a dead sweep; returns their numbers."""
    study_id = storage.get_study_id_from_name(study.study_name)
    numbers, given_up = [], []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if sweeper_alive(t, stale_after_s):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        retried = _mark_retry(study, storage, trial_id, t, grid, max_retries, "its sweeper died while it ran")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        if retried and not grid:
            study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF: t.number})
        (numbers if retried else given_up).append(t.number)
    if numbers:
        log.info(f"Trials {numbers} were left running by an interrupted sweep: marked FAIL and retried.")
    if given_up:
        log.warning(
            f"Trials {given_up} were left running by an interrupted sweep: marked FAIL, not retried "
            f"(their parameters failed {max_retries + 1} times; hydra.sweeper.max_retries={max_retries})."
        )
    return numbers + given_up


def failed_attempts(study: optuna.Study, params: Mapping[str, Any]) -> int:
    """Earlier trials with these parameters that failed and were retried."""
    return sum(
        t.params == params and t.user_attrs.get(RETRIED, t.user_attrs.get(INTERRUPTED, False))
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    )


def _mark_retry(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    t: FrozenTrial,
    grid: bool,
    max_retries: int,
    why: str,
) -> bool:
    """Before a RUNNING trial is failed: mark it retried (True) or, its parameters out of retries, final."""
    attempts = failed_attempts(study, t.params) + 1
    if attempts > max_retries:
        storage.set_trial_user_attr(trial_id, RETRIED, False)
        storage.set_trial_user_attr(
            trial_id,
            ERROR,
            f"{why}; these parameters failed {attempts} times, not retried again "
            f"(hydra.sweeper.max_retries={max_retries})"[:1000],
        )
        return False
    storage.set_trial_user_attr(trial_id, RETRIED, True)
    if grid and "grid_id" in t.system_attrs:
        storage.set_trial_system_attr(trial_id, "grid_id", -1)  # the grid point counts as unvisited again
    return True


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


def record(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    number: int,
    value: Any = None,
    error: BaseException | None = None,
    *,
    metric: Any = None,
    grid: bool = False,
    max_retries: int = 2,
) -> TrialState:
    """Tell the study how trial `number` ended: COMPLETE, PRUNED, or FAIL (exception, NaN, bad value).

    A FAIL keeps its message in user attr `error`; a ConnectionError is retried (same parameters, a new trial)
    up to max_retries times per parameter set. Called by the trial's own process as soon as the task returns,
    or by the sweeper for a trial whose process could not.
    """
    message = None
    if isinstance(error, optuna.TrialPruned):
        return _tell(study, number, TrialState.PRUNED)
    if error is not None:
        message = redact(f"{type(error).__name__}: {error}")
    else:
        try:
            values = objective_values(value, len(study.directions), metric)
            message = "the objective is NaN" if any(math.isnan(v) for v in values) else None
        except ValueError as e:
            message = str(e)
    if message is None:
        return _tell(study, number, TrialState.COMPLETE, values)
    log.warning(f"Trial {number} failed: {message}")
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )
    storage.set_trial_user_attr(trial_id, ERROR, message[:1000])
    retried = False
    if isinstance(error, TRANSIENT):
        t = storage.get_trial(trial_id)
        retried = _mark_retry(study, storage, trial_id, t, grid, max_retries, message)
    state = _tell(study, number, TrialState.FAIL)
    if retried:
        log.info(f"Trial {number} failed on a connection error: its parameters are tried again.")
        if not grid:
            study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF: number})
    return state


def _tell(study: optuna.Study, number: int, state: TrialState, values: list[float] | None = None):
    try:
        study.tell(number, values, state=state)
    except RuntimeError as e:
        # GridSampler calls study.stop() once the grid is covered; the trial is stored before it raises.
        if "Study.stop" not in str(e):
            raise
    return state
