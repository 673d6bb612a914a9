"""What a sweep leaves behind: the trial table (CSV), an optimisation-history plot (PNG), the best
trial(s)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState


def write_trial_table(study: optuna.Study, path: Path) -> Path:
    study.trials_dataframe(multi_index=False).to_csv(path, index=False)
    return path


def write_history_plot(study: optuna.Study, path: Path) -> Path:
    # Figure + Agg canvas directly: no pyplot, so the caller's matplotlib backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    n = len(study.directions)
    fig = Figure(figsize=(6, 3 * n))
    FigureCanvasAgg(fig)
    for i, direction in enumerate(study.directions):
        ax = fig.add_subplot(n, 1, i + 1)
        xs = [t.number for t in done]
        ys = [t.values[i] for t in done]
        ax.scatter(xs, ys, s=12, label="trial")
        if n == 1 and ys:
            pick = min if direction == optuna.study.StudyDirection.MINIMIZE else max
            best = [pick(ys[: k + 1]) for k in range(len(ys))]
            ax.step(xs, best, where="post", color="C1", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"objective {i}" if n > 1 else "objective")
        ax.legend(loc="best")
    fig.suptitle(f"{study.study_name}: optimisation history")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def best_summary(study: optuna.Study) -> dict[str, Any]:
    """{best_value, best_params, best_trial} for one objective; {best_trials: [...]} (the Pareto front)
    for several."""
    try:
        best = study.best_trials
    except ValueError:
        best = []
    if len(study.directions) == 1:
        if not best:
            return {"name": study.study_name, "best_trial": None, "best_value": None, "best_params": {}}
        t = study.best_trial
        return {
            "name": study.study_name,
            "best_trial": t.number,
            "best_value": t.value,
            "best_params": t.params,
        }
    front = [{"number": t.number, "values": t.values, "params": t.params} for t in best]
    return {"name": study.study_name, "best_trials": front}


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
