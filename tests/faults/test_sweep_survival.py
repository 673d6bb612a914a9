"""A sweep of the real gru-mm-train survives its trials: a trial with an invalid config, and one that starts
while the tracking server is down, fail alone (FAIL in the study, FAILED with gru_mm.error in MLflow); the
others complete and the sweep exits 0."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import cli_zygote
from sweep.sweep_cli_testlib import sweep_command, sweep_env, trial_runs
from sweep.sweep_testlib import load_study
from tracking.mlflow_testlib import MlflowServer


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "bad", "good", "message"),
    [
        ("data.batch_size", -1, 8, "ConfigError: data.batch_size must be >= 1"),
        (
            "ckpt_path",
            "missing.ckpt",
            "",
            "CheckpointError: ckpt_path=missing.ckpt: no such file",
        ),  # '': start
    ],
    ids=["config", "checkpoint"],
)
def test_a_trial_with_an_invalid_config_fails_alone(tmp_path: Path, key: str, bad, good, message: str):
    values = ",".join(str(v) or "''" for v in (bad, good))
    proc = cli_zygote.run(
        sweep_command(
            tmp_path, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2", f"{key}=choice({values})"
        ),
        env=sweep_env(),
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    study = load_study(f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}", "faults")
    by_value = {t.params[key]: t for t in study.trials}
    assert set(by_value) == {bad, good}
    assert by_value[bad].state == TrialState.FAIL and by_value[good].state == TrialState.COMPLETE
    assert by_value[bad].user_attrs["error"].startswith(message)
    assert "retried" not in by_value[bad].user_attrs, "a deterministic error is not retried"

    runs = trial_runs(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert runs[by_value[bad].number].info.status == "FAILED"
    assert runs[by_value[bad].number].data.tags["gru_mm.error"].startswith(message)
    assert runs[by_value[good].number].info.status == "FINISHED"


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the sweep ended early ({proc.returncode}):\n{log.read_text()[-6000:]}"
        assert time.monotonic() < end, f"{path.name} did not appear:\n{log.read_text()[-6000:]}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.service
def test_a_trial_starting_while_the_tracking_server_is_down_fails_alone_and_is_retried(tmp_path: Path):
    server = MlflowServer(tmp_path)
    uri = server.start()
    gate, log = tmp_path / "gate", tmp_path / "sweep.log"
    command = sweep_command(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "optimizer.lr=choice(0.001,0.003)",
        "+hydra.callbacks.gate._target_=job_gate.JobGate",
        f"+hydra.callbacks.gate.folder={gate}",
    )
    try:
        proc = cli_zygote.popen(command, env=sweep_env(uri), cwd=tmp_path, log=log)
        try:
            _wait_for(gate / "started-0", proc, log)
            (gate / "go-0").touch()  # trial 0 runs with the server up
            _wait_for(gate / "started-1", proc, log)
            server.stop()  # trial 1 starts with the server down
            (gate / "go-1").touch()
            _wait_for(gate / "started-2", proc, log)  # trial 1 has failed; the sweep goes on
            server.start()
            (gate / "go-2").touch()
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, log.read_text()[-6000:]

        trials = load_study(f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}", "faults").trials
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
        assert "not reachable" in trials[1].user_attrs["error"]
        # A connection error is worth another try: trial 2 ran trial 1's parameters again, once the
        # server was up.
        assert trials[1].user_attrs["retried"] is True
        assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params

        runs = trial_runs(MlflowClient(uri))
        assert {n: r.info.status for n, r in runs.items()} == {0: "FINISHED", 1: "FAILED", 2: "FINISHED"}
        assert "not reachable" in runs[1].data.tags["gru_mm.error"]  # sent once the server answered again
    finally:
        server.stop()
