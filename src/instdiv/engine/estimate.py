"""Locate the generalization threshold from a sweep's trials: a logistic fit of accuracy against log I,
a bootstrap confidence interval, and the phase-diagram figure.

The curve is acc(I) = A / (1 + exp(-k (log I - m))): a floor at 0, a plateau A (laptop-scale models need
not reach 1), steepness k and midpoint m. The threshold is the I where the curve crosses `target`:
log I = m - log(A / target - 1) / k, defined when A > target.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from instdiv.errors import DataError


def logistic(x, plateau, steepness, midpoint):
    return plateau / (1.0 + np.exp(-steepness * (x - midpoint)))


def fit(instructions, accuracy) -> tuple[float, float, float] | None:
    """(plateau, steepness, midpoint in log I) by least squares, or None when the fit does not converge."""
    x = np.log(np.asarray(instructions, dtype=float))
    y = np.asarray(accuracy, dtype=float)
    if len(np.unique(x)) < 3:
        return None
    span = x.max() - x.min()
    p0 = (max(y.max(), 0.05), 4.0 / max(span, 1e-3), float(np.median(x)))
    bounds = ([0.01, 1e-3, x.min() - span], [1.0, 100.0, x.max() + span])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(logistic, x, y, p0=p0, bounds=bounds, maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    return tuple(float(v) for v in popt)


def crossing(popt, target: float) -> float:
    """The I where the fitted curve reaches `target`; NaN when its plateau stays below it."""
    if popt is None:
        return math.nan
    plateau, steepness, midpoint = popt
    if plateau <= target:
        return math.nan
    return float(math.exp(midpoint - math.log(plateau / target - 1.0) / steepness))


def estimate(instructions, accuracy, target: float, n_boot: int = 1000, confidence: float = 0.9,
             seed: int = 0) -> dict:
    """Threshold, its bootstrap percentile interval (resampling trials), and the fit."""
    i = np.asarray(instructions, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    popt = fit(i, a)
    point = crossing(popt, target)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(i), len(i))
        value = crossing(fit(i[pick], a[pick]), target)
        if math.isfinite(value):
            draws.append(value)
    tail = (1 - confidence) / 2
    ok = len(draws) >= max(10, n_boot // 4)  # too few successful refits: no honest interval
    lo, hi = (np.quantile(draws, [tail, 1 - tail]) if ok else (math.nan, math.nan))
    return {"threshold_instructions": point, "ci_low": float(lo), "ci_high": float(hi), "target": target,
            "confidence": confidence, "n_trials": int(len(i)), "bootstrap_ok": len(draws), "bootstrap": n_boot,
            "fit": None if popt is None else dict(zip(("plateau", "steepness", "midpoint_log_i"), popt))}


def run(params, trials_path: Path, out_dir: Path, threshold_path: Path) -> dict:
    """The `estimate` stage: read the sweep's trials, fit, and write the threshold and, in `out_dir`, the
    points, the fitted curve and the figures."""
    cfg, task = params.sweep, params.task()
    try:
        trials = pd.read_csv(trials_path)
    except FileNotFoundError:
        raise DataError(f"{trials_path} not found; run the sweep first: dvc repro sweep") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        raise DataError(f"{trials_path} is corrupt; rerun the sweep: dvc repro -f sweep") from None
    done = trials[trials["state"] == "COMPLETE"] if "state" in trials else trials.iloc[:0]
    if len(done) < 3 or cfg.metric not in done:
        raise DataError(f"{trials_path} holds {len(done)} completed trials; the fit needs at least 3 "
                        "(raise sweep.max_trials or finish the sweep: dvc repro sweep)")
    x = task.count_axis
    est = estimate(done[x], done[cfg.metric], cfg.target, cfg.bootstrap, cfg.confidence)
    est["metric"] = cfg.metric
    threshold_path.parent.mkdir(parents=True, exist_ok=True)
    threshold_path.write_text(json.dumps(est, indent=2) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = [x, *task.metrics, cfg.metric, *cfg.axes, "seed"]
    done.sort_values(x)[[c for c in dict.fromkeys(cols) if c in done]].to_csv(out_dir / "points.csv", index=False)
    grid = np.geomspace(done[x].min(), done[x].max(), 60)
    if est["fit"]:
        f = est["fit"]
        fitted = logistic(np.log(grid), f["plateau"], f["steepness"], f["midpoint_log_i"])
        pd.DataFrame({x: grid.round(1), "fit": fitted.round(4)}).to_csv(out_dir / "fit.csv", index=False)
    pruned = trials[trials["state"] == "PRUNED"] if "state" in trials else trials.iloc[:0]
    phase_diagram(done, est, cfg.metric, x, task.count_label, task.seen_metric, out_dir / "phase_diagram.png",
                  pruned)
    heatmap(done, cfg.metric, list(cfg.axes), x, task.count_label, out_dir / "heatmap.png")
    _log_to_study_run(params, est, [threshold_path, out_dir / "phase_diagram.png"])
    return est


def _log_to_study_run(params, est: dict, files: list[Path]) -> None:
    """The threshold, its interval and the figure on the study's MLflow run, beside its nested trial runs."""
    from instdiv.engine import tracking
    from instdiv.engine.sweep.study import parent_run

    run_id = parent_run(params)
    if run_id is None:
        return
    scores = {k: est[k] for k in ("threshold_instructions", "ci_low", "ci_high") if math.isfinite(est[k])}
    client = tracking.client(params.tracking)
    for key, value in scores.items():
        client.log_metric(run_id, f"estimate/{key}", value)
    for path in files:
        client.log_artifact(run_id, str(path), "estimate")


def headline(est: dict) -> str:
    t = est["threshold_instructions"]
    if not math.isfinite(t):
        plateau = est["fit"]["plateau"] if est["fit"] else math.nan
        return (f"threshold: not reached: {est['metric']} plateaus at {plateau:.2f}, below the target "
                f"{est['target']} (lower sweep.target, or widen sweep.instructions / raise sweep.epochs); "
                f"{est['n_trials']} training runs")
    ci = f"{est['ci_low']:.0f}-{est['ci_high']:.0f}" if math.isfinite(est["ci_low"]) else "undetermined"
    return (f"threshold: {t:.0f} instructions ({est['confidence']:.0%} CI {ci}) from {est['n_trials']} "
            f"training runs")


def phase_diagram(done: pd.DataFrame, est: dict, metric: str, x: str, x_label: str, seen: str | None,
                  path: Path, pruned: pd.DataFrame | None = None) -> None:
    """The metric against I on a log axis with the fit, the threshold and its interval; beside it the score
    on the training instructions (`seen`), which must be high for the rest to mean anything."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if seen in done:
        ax.scatter(done[x], done[seen], marker="s", color="tab:gray", alpha=0.7,
                   label=f"seen instructions ({seen})")
    ax.scatter(done[x], done[metric], color="tab:blue", zorder=3,
               label=f"unseen instructions ({metric})")
    if pruned is not None and len(pruned) and "last_validation" in pruned:
        ax.scatter(pruned[x], pruned["last_validation"], marker="x", color="tab:red", zorder=3,
                   label="pruned trials (last validation score)")
    if est["fit"]:
        f = est["fit"]
        grid = np.geomspace(done[x].min(), done[x].max(), 200)
        ax.plot(grid, logistic(np.log(grid), f["plateau"], f["steepness"], f["midpoint_log_i"]),
                color="tab:blue", label="logistic fit")
    t = est["threshold_instructions"]
    if math.isfinite(t):
        if math.isfinite(est["ci_low"]):
            ax.axvspan(est["ci_low"], est["ci_high"], color="tab:orange", alpha=0.2,
                       label=f"{est['confidence']:.0%} CI {est['ci_low']:.0f}-{est['ci_high']:.0f}")
        ax.axvline(t, color="tab:orange", label=f"threshold {t:.0f}")
    ax.axhline(est["target"], color="black", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{x_label} (log scale)")
    ax.set_ylabel("exact-match accuracy" if "accuracy" in metric else metric.replace("_", " "))
    ax.set_title(f"Generalization to unseen instructions ({len(done)} training runs)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def heatmap(done: pd.DataFrame, metric: str, axes: list[str], x: str, x_label: str, path: Path) -> None:
    """Mean metric over I x the first other axis that varies (S, skew, ...), when the study spans two."""
    second = next((a for a in axes if a in done and done[a].nunique() > 1), None)
    if second is None:
        path.unlink(missing_ok=True)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = done.pivot_table(index=second, columns=x, values=metric, aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * table.shape[1], 1.2 + 0.5 * table.shape[0]), dpi=120)
    im = ax.imshow(table.values, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    for (r, c), v in np.ndenumerate(table.values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(second.replace("_", " "))
    ax.set_title(metric.replace("_", " "))
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
