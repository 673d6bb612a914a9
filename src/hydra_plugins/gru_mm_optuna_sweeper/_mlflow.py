"""One MLflow parent run per study: found again by its tags when a sweep resumes; trials are its children."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import _report
from ._storage import redact
from ._study import ERROR as ERROR_ATTR

log = logging.getLogger(__name__)

STUDY_TAG = "optuna.study_name"
TRIAL_TAG = "optuna.trial_number"
ERROR_TAG = "gru_mm.error"  # the failure's message, as gru-mm-train sets it on a run that fails in training
ROLE_TAG = "gru_mm.sweep_role"  # "parent" on the sweep's run; trials carry mlflow.parentRunId instead


class ParentRun:
    def __init__(self, tracking_uri: str, experiment_name: str, study_name: str, tags: dict[str, str]):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self._unsent: dict[int, FrozenTrial] = {}  # failed trials not yet marked: the server was away
        self.experiment_id = self._experiment(tracking_uri, experiment_name)
        self.study_name = study_name
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'parent'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            log.info(f"MLflow: resuming parent run {self.run_id} of study '{study_name}'.")
        else:
            run = self.client.create_run(self.experiment_id, run_name=study_name, tags=tags)
            self.run_id = run.info.run_id
            log.info(f"MLflow: parent run {self.run_id} in experiment '{experiment_name}'.")
        self.client.set_tag(self.run_id, STUDY_TAG, study_name)
        self.client.set_tag(self.run_id, ROLE_TAG, "parent")

    def _experiment(self, tracking_uri: str, name: str) -> str:
        from mlflow.exceptions import MlflowException

        from gru_mm.tracking.store import artifact_location

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=artifact_location(tracking_uri, name)
            )
        except MlflowException:  # created meanwhile by a trial or another sweeper
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def kill_children(self, numbers: list[int]) -> None:
        """Children of trials a dead sweep left running are marked KILLED, as their trials are marked FAIL."""
        if not numbers:
            return
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}' and attributes.status = 'RUNNING'",
        )
        wanted = {str(n) for n in numbers}
        for run in runs:
            if run.data.tags.get(TRIAL_TAG) in wanted:
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def fail_child(self, trial: FrozenTrial) -> None:
        """The failed trial's run: FAILED with tag gru_mm.error; created (FAILED) if the trial failed
        before it could start one. Kept for later when the tracking server does not answer."""
        self._unsent[trial.number] = trial
        self.send_failures()

    def send_failures(self) -> None:
        from gru_mm.tracking.store import check_reachable

        if not self._unsent:
            return
        try:
            check_reachable(self.tracking_uri, timeout=2.0)  # seconds, not MLflow's minutes of retries
            for number in sorted(self._unsent):
                self._mark_failed(self._unsent[number])
                del self._unsent[number]
        except Exception as e:
            log.warning(
                f"MLflow: failed trials {sorted(self._unsent)} are not marked yet ({redact(str(e))}); "
                "tried again after the next batch."
            )

    def _mark_failed(self, trial: FrozenTrial) -> None:
        error = redact(str(trial.user_attrs.get(ERROR_ATTR) or "the trial failed"))[:5000]
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{self.run_id}' and tags.`{TRIAL_TAG}` = '{trial.number}'"
            ),
        )
        if not runs:  # it failed before its run started (a bad config, an unreachable server, ...)
            tags = {
                "mlflow.parentRunId": self.run_id,
                STUDY_TAG: self.study_name,
                TRIAL_TAG: str(trial.number),
            }
            run = self.client.create_run(
                self.experiment_id, run_name=f"trial {trial.number} (failed)", tags=tags
            )
            for key, value in trial.params.items():
                self.client.log_param(run.info.run_id, key, redact(str(value))[:250])
            runs = [run]
        for run in runs:
            self.client.set_tag(run.info.run_id, ERROR_TAG, error)
            if run.info.status != "FAILED":
                self.client.set_terminated(run.info.run_id, status="FAILED")

    def finish(self, study: optuna.Study, summary: dict[str, Any]) -> None:
        trials = study.get_trials(deepcopy=False)
        step = len(trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            n = sum(t.state == state for t in trials)
            self.client.log_metric(self.run_id, f"n_{state.name.lower()}", n, step=step)
        if len(study.directions) == 1 and _report.finite(summary.get("best_value")):
            self.client.log_metric(self.run_id, "best_value", summary["best_value"], step=step)
            self.client.set_tag(self.run_id, "best_trial", str(summary["best_trial"]))
            # Tags, not params: a resumed sweep may find a new best, and MLflow params are write-once.
            for key, value in summary["best_params"].items():
                self.client.set_tag(self.run_id, f"best_params.{key}", str(value))
        elif "best_trials" in summary:
            self.client.log_metric(self.run_id, "pareto_size", len(summary["best_trials"]), step=step)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "best.json").write_text(json.dumps(summary, indent=2, default=str))
            _report.write_trial_table(study, out / "trials.csv")
            if any(t.state == TrialState.COMPLETE for t in trials):
                _report.write_history_plot(study, out / "optimization_history.png")
            for path in sorted(out.iterdir()):
                self.client.log_artifact(self.run_id, str(path), artifact_path="optuna")
        self.client.set_terminated(self.run_id, status="FINISHED")
