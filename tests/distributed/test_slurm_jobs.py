"""SLURM: the sbatch examples are well-formed, and a requeued training job resumes from its last.ckpt.

The real-cluster tests need a running SLURM (scripts/cluster/start_slurm.sh) and SLURM_CONF; else skipped,
or failed where GRU_MM_REQUIRE_SLURM=1 (CI)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweep"))
from sweep_testlib import slurm_or_skip  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SBATCH = REPO / "scripts" / "slurm"


def directives(path: Path) -> dict[str, str]:
    """`#SBATCH --key=value` lines of a script, comments stripped."""
    found = {}
    for line in path.read_text().splitlines():
        if m := re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line):
            found[m.group(1)] = m.group(2) or ""
    return found


@pytest.mark.parametrize("name", ["train_multinode.sbatch", "sweep.sbatch"])
def test_sbatch_scripts_parse(name: str):
    script = SBATCH / name
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "requeue" in directives(script)


def test_multinode_script_matches_lightnings_slurm_checks():
    d = directives(SBATCH / "train_multinode.sbatch")
    assert (d["nodes"], d["ntasks-per-node"], d["gpus-per-node"]) == ("2", "4", "4")
    text = (SBATCH / "train_multinode.sbatch").read_text()
    # Lightning requires SLURM_NNODES == num_nodes and SLURM_NTASKS_PER_NODE == devices; the run folder must
    # not depend on the start time (nodes would disagree, and a requeued job would not find its checkpoint).
    for piece in (
        "trainer=ddp",
        'trainer.num_nodes="${SLURM_JOB_NUM_NODES}"',
        'trainer.devices="${SLURM_NTASKS_PER_NODE}"',
        "${SLURM_JOB_ID}",
        "srun",
    ):
        assert piece in text


@pytest.mark.service
@pytest.mark.xdist_group("slurm")  # one test at a time on the one SLURM cluster (make test runs in parallel)
def test_sbatch_examples_are_accepted_by_slurm(tmp_path: Path):
    slurm_or_skip()
    # This cluster is one CPU node: shrink the multi-node request, keep everything else as written.
    shrink = {
        "train_multinode.sbatch": [
            "--nodes=1",
            "--ntasks-per-node=2",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--mem=1G",
        ],
        "sweep.sbatch": [],
    }
    for name, extra in shrink.items():
        out = subprocess.run(
            ["sbatch", "--test-only", *extra, f"--output={tmp_path}/%j.out", str(SBATCH / name)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=30,
        )
        assert out.returncode == 0 and "to start at" in out.stderr, f"{name}: {out.stderr}"


def _job_state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=15)
    m = re.search(r"JobState=(\w+)", out.stdout)
    return m.group(1) if m else "GONE"


def _wait(predicate, timeout: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(
                f"timed out waiting for {what}; job log:\n{log.read_text()[-4000:] if log.exists() else ''}"
            )
        time.sleep(0.5)


def _release(job: str) -> bool:
    """True once the job has ended; while it is pending, lift the ~2 minutes' BeginTime SLURM gives a requeued
    job (repeated: an update made while the requeue is still settling may not stick)."""
    state = _job_state(job)
    if state == "PENDING":
        # not in the second of the requeue: slurmd revoked the first attempt's credential then, at one-second
        # resolution, and refused a new attempt started that second ("Job credential revoked": the job FAILED)
        time.sleep(2)
        subprocess.run(
            ["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, timeout=30
        )
        time.sleep(2)
    return state in ("COMPLETED", "FAILED", "CANCELLED", "GONE")


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.xdist_group("slurm")  # one test at a time on the one SLURM cluster (make test runs in parallel)
def test_requeued_training_job_resumes_from_last_checkpoint(tmp_path: Path):
    slurm_or_skip()
    run_dir, log = tmp_path / "run", tmp_path / "job.out"
    train = [
        str(BIN / "gru-mm-train"),
        "debug=smoke",
        f"paths.root={tmp_path}",
        f"hydra.run.dir={run_dir}",
        "test=false",
        "experiment_name=requeue",
        "trainer.max_epochs=4",
        "+callbacks.slow._target_=ddp_probe.SlowEpochs",
        "+callbacks.slow.seconds=3",
        "trusted_targets=[ddp_probe]",  # the requeued job resumes a checkpoint that names the test's callback
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    job = (
        subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--requeue",
                "--open-mode=append",
                f"--output={log}",
                f"--chdir={REPO}",
                "--cpus-per-task=1",
                "--job-name=gru-mm-requeue-test",
                f"--wrap={shlex.join(train)}",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=30,
        )
        .stdout.strip()
        .split(";")[0]
    )
    try:
        last = run_dir / "checkpoints" / "last.ckpt"
        _wait(last.is_file, 240, "the first epoch's last.ckpt", log)
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
        _wait(lambda: _release(job), 300, "the requeued job to finish", log)
    finally:
        subprocess.run(["scancel", job], timeout=30)
    text = log.read_text()
    assert _job_state(job) in ("COMPLETED", "GONE"), text[-4000:]
    assert f"SLURM requeue 1: resuming from {last}" in text, text[-4000:]
    assert "DUE TO JOB REQUEUE" in text and text.count("`Trainer.fit` stopped") == 1, (
        "the first attempt must be cut off"
    )

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 3, "the resumed run should finish all 4 epochs"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("requeue").experiment_id])
    assert len(runs) == 1, "the requeued job must continue the first attempt's MLflow run"
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["gru_mm.resumed_from"] == str(last)


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.xdist_group("slurm")  # one test at a time on the one SLURM cluster (make test runs in parallel)
def test_sweep_trial_trains_with_ddp_processes_started_by_slurm(tmp_path: Path):
    """The supported way to combine -m with DDP: SLURM starts tasks_per_node = devices processes per trial."""
    slurm_or_skip()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [
            str(BIN / "gru-mm-train"),
            "-m",
            "hparams_search=avdigits",
            "debug=smoke",
            "test=false",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.study_name=slurmddp",
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10",
            "trainer=ddp_cpu",
            f"paths.root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    sweep = tmp_path / "logs" / "sweeps" / "slurmddp"
    (job,) = (p for p in (sweep / ".submitit").iterdir() if p.is_dir() and not p.is_symlink())
    logs = "".join(p.read_text() for p in job.glob("*_log.*"))
    assert "Starting with 2 processes" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert sorted(p.name for p in (sweep / "0" / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert len(list(sweep.rglob("*.ckpt"))) == 2, "one best and one last checkpoint, written once"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 2 and len(children) == 1 and children[0].info.status == "FINISHED"
