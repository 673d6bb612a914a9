"""The real-data check: gru-mm models against logistic regression on a realistic audio + frames manifest.

The data (`gru_mm.data.sources.realistic`): espeak-ng speech of the digits by speakers held out of training,
paired with 2-8 noisy 32x32 frames of scikit-learn's real handwritten digits by held-out writers. Each
gru-mm model is a real `gru-mm-train` run of `experiment=av_manifest` (frames only, audio only, the fused
recipe, and fused variants: without unimodal heads, heads on the final GRU state, OGM-GE, late fusion);
its test accuracy is read from MLflow.
The baselines are scikit-learn logistic regressions on the same decoded inputs: frame pixels (one model per
frame, log-probabilities averaged over a sample's frames), MFCC statistics (the DCT of the same log-mel
frames: mean, std, min, max per coefficient), and their late fusion (summed log-probabilities).

    .venv/bin/python scripts/real_data_check.py --out /tmp/realdata --json docs/realdata-check.json

Exit status 1 when a target fails: a gru-mm model below logistic regression on the same inputs, or the
best fused model below the best single modality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# name -> (what it uses, overrides of experiment=av_manifest: attention fusion, unimodal heads with weight 0.5
# reading each modality's GRU outputs averaged over its real steps)
MODELS = {
    "frames only": ("frames", ["model.modalities=[frames]"]),
    "audio only": ("audio", ["model.modalities=[audio]"]),
    "fused (the recipe)": ("fused", []),
    "fused, no unimodal heads": ("fused", ["model.unimodal_heads.weight=0"]),
    "fused, unimodal heads on the final state": ("fused", ["model.unimodal_heads.readout=state"]),
    "fused + OGM-GE": ("fused", ["model.ogm_ge.enabled=true"]),
    "fused, late fusion": ("fused", ["model/fusion=late"]),
}


def decoded(manifest: Path, cache: Path, size: int) -> dict:
    """Each split's (log-mel audio, frames, targets), decoded as `data=manifest` decodes them."""
    from gru_mm.data.sources.manifest import Manifest

    source = Manifest(
        manifest,
        cache_dir=cache,
        audio={"sample_rate": 16000, "n_mels": 40},
        frames={"height": size, "width": size, "channels": 3},
    )
    return {
        split: (
            [s.modalities["audio"] for s in samples],
            [s.modalities["frames"] for s in samples],
            np.array([s.target for s in samples]),
        )
        for split, samples in source.load().items()
    }


def mfcc_stats(log_mel: np.ndarray, n: int = 20) -> np.ndarray:
    from scipy.fft import dct

    c = dct(log_mel, type=2, norm="ortho", axis=1)[:, :n]
    return np.concatenate([c.mean(0), c.std(0), c.min(0), c.max(0)])


def logistic_baselines(data: dict) -> dict[str, float]:
    """Test accuracy of logistic regression on frame pixels, on MFCC statistics, and of their late fusion."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():  # C=0.1: a fixed, moderate regularisation (not tuned)
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))

    (a_tr, f_tr, y_tr), (a_te, f_te, y_te) = data["train"], data["test"]
    audio = model().fit(np.stack([mfcc_stats(a) for a in a_tr]), y_tr)
    audio_lp = audio.predict_log_proba(np.stack([mfcc_stats(a) for a in a_te]))
    pixels = model().fit(
        np.concatenate([f.reshape(len(f), -1) for f in f_tr]), np.repeat(y_tr, [len(f) for f in f_tr])
    )
    frames_lp = np.stack([pixels.predict_log_proba(f.reshape(len(f), -1)).mean(0) for f in f_te])
    acc = lambda lp: float((lp.argmax(1) == y_te).mean())  # noqa: E731
    return {"frames": acc(frames_lp), "audio": acc(audio_lp), "fused": acc(audio_lp + frames_lp)}


def train(name: str, overrides: list[str], manifest: Path, root: Path, epochs: int, seed: int) -> dict:
    """One `gru-mm-train` run; its test accuracy and time per epoch from MLflow."""
    from mlflow.tracking import MlflowClient

    run_name = f"{name} seed{seed}"
    cmd = [
        str(BIN / "gru-mm-train"),
        "experiment=av_manifest",
        f"data.path={manifest}",
        f"paths.root={root}",
        f"trainer.max_epochs={epochs}",
        f"seed={seed}",
        f"run_name='{run_name}'",
        "trainer.enable_progress_bar=false",
        "log_model=false",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: gru-mm-train failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.mlflow.runName = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    metrics = run.data.metrics
    return {
        "test_acc": metrics["test/acc"],
        "val_acc": metrics.get("val/acc"),
        "wall_s": round(wall, 1),
        "warnings": {k: v for k, v in run.data.tags.items() if k.startswith("gru_mm.modality_warning")},
    }


def write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def table(rows: list[dict]) -> str:
    lines = [
        "| model | inputs | test acc | logistic regression, same inputs | wall s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['uses']} | {r['test_acc']:.3f} | {r['baseline']:.3f} | {r['wall_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="gru-mm models vs logistic regression on generated real-ish data")
    p.add_argument("--out", type=Path, default=Path("/tmp/gru-mm-realdata"), help="data, runs and mlflow.db")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-val", type=int, default=150)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--data-seed", type=int, default=0, help="the data generator's seed")
    p.add_argument("--models", nargs="*", default=list(MODELS), help=f"a subset of: {list(MODELS)}")
    args = p.parse_args(argv)

    from gru_mm.data.sources.realistic import RealisticSpec, generate

    spec = RealisticSpec(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, seed=args.data_seed)
    data_dir = args.out / f"data-{spec.n_train}-{spec.n_val}-{spec.n_test}-seed{spec.seed}"
    manifest = data_dir / "manifest.csv"
    if not manifest.exists():
        generate(data_dir, spec)
    start = time.perf_counter()
    baseline = logistic_baselines(decoded(manifest, data_dir / "lr-cache", 32))
    print(f"logistic regression ({time.perf_counter() - start:.0f} s): {baseline}", flush=True)
    recipe = yaml.safe_load((REPO / "conf/experiment/av_manifest.yaml").read_text())
    epochs = args.epochs or int(recipe["trainer"]["max_epochs"])
    rows = []
    for name in args.models:
        uses, overrides = MODELS[name]
        result = train(name, overrides, manifest, data_dir / "runs", epochs, args.seed)
        rows.append({"model": name, "uses": uses, "baseline": baseline[uses], **result})
        print(f"{name}: {result}", flush=True)
        if args.json:  # after every run: a long check stopped midway keeps what it measured
            write(args.json, {"logistic_regression": baseline, "models": rows, "finished": False})
    print(table(rows))
    single = max((r["test_acc"] for r in rows if r["uses"] != "fused"), default=None)
    fused = max((r["test_acc"] for r in rows if r["uses"] == "fused"), default=None)
    failures = [
        f"{r['model']} ({r['test_acc']:.3f}) < logistic regression ({r['baseline']:.3f})"
        for r in rows
        if r["test_acc"] < r["baseline"]
    ]
    if single is not None and fused is not None and fused < single:
        failures.append(f"best fused ({fused:.3f}) < best single modality ({single:.3f})")
    record = {
        "command": shlex.join(["scripts/real_data_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "data": {
            "n_train": spec.n_train,
            "n_val": spec.n_val,
            "n_test": spec.n_test,
            "size": spec.size,
            "seed": spec.seed,
        },
        "epochs": epochs,
        "seed": args.seed,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "logistic_regression": baseline,
        "models": rows,
        "failures": failures,
        "finished": True,
    }
    if args.json:
        write(args.json, record)
    for f in failures:
        print(f"TARGET MISSED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
