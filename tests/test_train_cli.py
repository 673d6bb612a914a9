"""End to end through the real console scripts: train (smoke), inspect the MLflow store, evaluate, resume."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import cli_zygote
from conftest import BIN, REPO, run_cli

pytestmark = pytest.mark.slow


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def _runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    result = run_cli(
        "gru-mm-train",
        "debug=smoke",
        f"paths.root={root}",
        "run_name=smoke",
        "callbacks.system_metrics.interval_s=0.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_smoke_run_is_fully_tracked(smoke_run, monkeypatch):
    root, result = smoke_run
    client = _client(root)
    # MLflow finds a logged model's artifacts through the global tracking URI, not the client's
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    (run,) = _runs(client, "avdigits")
    # the last line says where to look
    page = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert (
        f"`mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}`, then {page}"
        in result.stdout + result.stderr
    )
    assert run.info.status == "FINISHED"
    assert "litlogger" not in result.stdout + result.stderr  # Lightning's advertisement is filtered out
    params = run.data.params
    assert params["model/gru/hidden_size"] == "64"
    assert params["data/batch_size"] == "32"
    assert params["trainer/max_epochs"] == "1"
    metrics = run.data.metrics
    for key in ("train/loss_epoch", "val/acc", "val/f1", "test/acc", "test/f1", "train/padding_ratio"):
        assert key in metrics, f"{key} missing from {sorted(metrics)}"
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["train/padding_ratio"] >= 1.0
    grad_norms = client.get_metric_history(run.info.run_id, "train/grad_norm")
    assert len(grad_norms) == 3  # one per training step of the smoke run
    shares = [metrics[f"test_attribution/{m}/share"] for m in ("audio", "video")]
    assert sum(shares) == pytest.approx(1.0) and min(shares) > 0  # both modalities carry the prediction
    plots = _artifact_paths(client, run.info.run_id, "plots")
    assert {"plots/attribution.png", "plots/gradient_through_time.png"} <= set(plots)
    for m in ("audio", "video"):  # how much gradient reaches each sequence's first step
        assert 0 < metrics[f"test_gradient/{m}/start_vs_peak"] <= 1
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert cpu and all(0 <= m.value <= 100 for m in cpu)  # sampled every 0.5 s while fitting
    assert "system/system_memory_usage_megabytes" in metrics
    tags = run.data.tags
    assert "debug=smoke" in tags["gru_mm.overrides"]
    assert tags["gru_mm.command"].startswith("gru-mm-train")
    assert tags["mlflow.source.git.commit"]
    artifacts = _artifact_paths(client, run.info.run_id)
    assert "config/config.yaml" in artifacts
    assert "plots/test_confusion_matrix.png" in artifacts
    # the pyfunc model: an MLflow 3 LoggedModel of the run, listed under the run by its name
    assert {"model/MLmodel", "model/requirements.txt"} <= set(
        _artifact_paths(client, run.info.run_id, "model")
    )
    ckpts = [a for a in artifacts if a.startswith("checkpoints/") and a.endswith(".ckpt")]
    assert len(ckpts) == 1
    local = client.download_artifacts(run.info.run_id, "config/config.yaml", str(root))
    assert "hidden_size: 64" in Path(local).read_text()


def test_the_runs_mlflow_model_reproduces_its_test_accuracy(smoke_run, monkeypatch):
    """model/ is a pyfunc model: loaded from the store alone, it scores the test split as the run did."""
    import mlflow.pyfunc
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from gru_mm import checkpoints
    from gru_mm.models.build import build_datamodule

    root, _ = smoke_run
    client = _client(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)  # how the logged model is found
    run = next(r for r in _runs(client, "avdigits") if r.info.run_name == "smoke")
    local = client.download_artifacts(run.info.run_id, "model", str(root / "downloaded"))
    model = mlflow.pyfunc.load_model(local)
    # the model's data is a slim checkpoint: weights, config and data meta, no optimizer state
    data = next(Path(local).glob("data/*.ckpt"))
    assert set(torch.load(data, weights_only=True)) == {"state_dict", "gru_mm", "gru_mm_data"}
    ckpt = next((root / "logs").glob("train/runs/*/checkpoints/epoch*.ckpt"))
    datamodule = build_datamodule(OmegaConf.create(checkpoints.read_meta(ckpt)["config"]))
    datamodule.validate()
    test = datamodule.source.split("test")
    frame = model.predict([dict(s.modalities) for s in test])
    accuracy = float(np.mean(frame["predicted"].to_numpy() == np.array([str(s.target) for s in test])))
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)


def test_eval_logs_test_metrics_of_the_checkpoint(smoke_run):
    root, _ = smoke_run
    ckpt = next((root / "logs").glob("train/runs/*/checkpoints/epoch*.ckpt"))
    result = run_cli("gru-mm-eval", f"ckpt_path={ckpt}", f"paths.root={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    # a readable name of its own, shown in the log (MLflow's own names repeat: training seeded `random`)
    shown = re.search(r"MLflow: run '([^']+)'", result.stdout + result.stderr)
    assert shown, (result.stdout + result.stderr)[-3000:]
    assert re.fullmatch(r"avdigits eval \d\d-\d\d \d\d:\d\d:\d\d [0-9a-f]{4}", shown.group(1)), shown.group(1)
    client = _client(root)
    runs = {r.info.run_name: r for r in _runs(client, "avdigits")}
    train_run, eval_run = runs["smoke"], runs[shown.group(1)]
    assert eval_run.data.tags["gru_mm.source_run_id"] == train_run.info.run_id
    assert f"/runs/{eval_run.info.run_id}" in result.stdout + result.stderr  # where to look
    # the same checkpoint on the same test batches gives the same accuracy as the training run's test
    assert eval_run.data.metrics["test/acc"] == pytest.approx(train_run.data.metrics["test/acc"])


def test_predict_and_eval_on_a_new_file_refuse_a_model_of_the_built_in_data_in_one_sentence(smoke_run):
    root, _ = smoke_run
    ckpt = next((root / "logs").glob("train/runs/*/checkpoints/epoch*.ckpt"))
    for command, key in (("gru-mm-predict", "data_path"), ("gru-mm-eval", "data.path")):
        result = run_cli(command, f"ckpt_path={ckpt}", f"{key}={root / 'new.csv'}", f"paths.root={root}")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"{command}: {key}: this model was trained on AVDigits, which reads no files" in result.stderr


def test_resume_from_last_continues_the_same_run(isolated_root):
    """A two-epoch run killed (SIGKILL) as soon as its first epoch is checkpointed, then `ckpt_path=last`."""
    args = [
        "debug=smoke",
        "trainer.max_epochs=2",
        "test=false",
        "log_model=false",
        f"paths.root={isolated_root}",
    ]
    proc = cli_zygote.popen([str(BIN / "gru-mm-train"), *args], env=dict(os.environ), cwd=REPO)
    deadline = time.time() + 300
    while not (lasts := list(isolated_root.glob("logs/train/runs/*/checkpoints/last.ckpt"))):
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(lasts[0], weights_only=True)["epoch"] == 0  # killed in its second epoch
    client = _client(isolated_root)
    (killed,) = _runs(client, "avdigits")
    assert killed.info.status == "RUNNING"  # really interrupted: nothing finished it
    result = run_cli("gru-mm-train", *args, "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    train_runs = [r for r in _runs(client, "avdigits") if r.data.tags.get("gru_mm.job") != "eval"]
    assert len(train_runs) == 1, "resuming must continue the interrupted run, not start a new one"
    run = train_runs[0]
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    # one validation per epoch: epoch 0 from the killed process, epoch 1 from the resumed one
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm")]
    assert steps == sorted(steps) and len(steps) == 6  # the step counter continued, not restarted
    assert "gru_mm.resumed_from" in run.data.tags


def test_eval_of_a_missing_checkpoint_names_it(isolated_root):
    result = run_cli("gru-mm-eval", "ckpt_path=/nonexistent/x.ckpt", f"paths.root={isolated_root}")
    assert result.returncode != 0
    assert "ckpt_path=/nonexistent/x.ckpt: no such file" in result.stderr


def test_multirun_jobs_get_distinct_run_names_and_log_their_gates(isolated_root):
    result = run_cli(
        "gru-mm-train", "-m", "debug=smoke", "model/gru=torch,cho2014", f"paths.root={isolated_root}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(isolated_root)
    runs = {r.info.run_name: r for r in _runs(client, "avdigits")}
    assert sorted(runs) == ["#0 debug=smoke model/gru=torch", "#1 debug=smoke model/gru=cho2014"]
    plots = {name: _artifact_paths(client, r.info.run_id, "plots") for name, r in runs.items()}
    for name in runs:  # both cells: torch's gates are recomputed from its outputs
        assert plots[name] == [
            "plots/attribution.png",
            "plots/gates_audio.png",
            "plots/gates_video.png",
            "plots/gradient_through_time.png",
            "plots/test_confusion_matrix.png",
        ]


def test_early_stopping_ends_training_when_the_metric_stops_improving(isolated_root):
    # min_delta 10 (accuracy cannot gain that): epoch 0 sets the best, epoch 1 does not improve -> stop
    result = run_cli(
        "gru-mm-train",
        "debug=smoke",
        "callbacks=early_stop",
        "trainer.max_epochs=6",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=10",
        "test=false",
        "log_model=false",
        "run_name=early",
        f"paths.root={isolated_root}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(isolated_root)
    (run,) = _runs(client, "avdigits")
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2  # two validations of six epochs


def test_lr_find_trains_from_the_suggested_rate_and_keeps_its_steps_out_of_the_run(isolated_root):
    refused = run_cli(
        "gru-mm-train",
        "debug=smoke",
        "lr_find.enabled=true",
        "trainer=ddp_cpu",
        f"paths.root={isolated_root}",
    )
    assert refused.returncode == 1 and "lr_find.enabled runs in one process" in refused.stderr
    result = run_cli(
        "gru-mm-train",
        "debug=smoke",
        "lr_find.enabled=true",
        "lr_find.steps=30",
        "test=false",
        "log_model=false",
        f"paths.root={isolated_root}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(isolated_root)
    (run,) = _runs(client, "avdigits")  # the refused command started no run
    suggested = run.data.metrics["lr_find/suggested_lr"]
    (lr,) = client.get_metric_history(run.info.run_id, "lr-AdamW")
    assert lr.value == pytest.approx(suggested) and suggested != pytest.approx(0.003)  # not optimizer.lr
    assert "plots/lr_find.png" in _artifact_paths(client, run.info.run_id, "plots")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm")]
    assert steps == [0, 1, 2]  # the smoke run's own three steps; the test's 30 are not in the run
    run_dir = next((isolated_root / "logs").glob("train/runs/*"))
    assert not list(run_dir.rglob(".lr_find_*"))  # its temporary checkpoint is gone


def test_a_diverging_run_stops_with_one_sentence_and_keeps_what_it_had(isolated_root):
    # the learning rate jumps by 1e32 after epoch 0: epoch 1 diverges, epoch 0's state and metrics stay
    result = run_cli(
        "gru-mm-train",
        "debug=smoke",
        "trainer.max_epochs=2",
        f"paths.root={isolated_root}",
        "scheduler._target_=torch.optim.lr_scheduler.StepLR",
        "~scheduler.T_max",
        "~scheduler.eta_min",
        "+scheduler.step_size=1",
        "+scheduler.gamma=1e32",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("gru-mm-train: train loss is ") and " at epoch 1, step " in line, line
    assert "lower optimizer.lr, set trainer.gradient_clip_val" in line
    last = Path(line.split("the last checkpoint is kept: ")[1])
    assert last.name == "last.ckpt" and torch.load(last, weights_only=False)["epoch"] == 0
    client = _client(isolated_root)
    (run,) = _runs(client, "avdigits")
    assert run.info.status == "FAILED" and "val/acc" in run.data.metrics
    assert run.data.tags["gru_mm.error"].startswith("FloatingPointError: train loss is ")
