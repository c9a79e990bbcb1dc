"""Locate the generalization threshold from a sweep's trials: a logistic fit per seed, an interval from the
seeds, and the phase-diagram figure.

The curve is acc(I) = A / (1 + exp(-k (log I - m))): a floor at 0, a plateau A (laptop-scale models need
not reach 1), steepness k and midpoint m. The threshold is the I where the curve reaches `fraction` of its
plateau: log I = m - log(1 / fraction - 1) / k (m itself at the default half).

Each seed draws its own rules, inputs and initial weights, so each seed's runs give one threshold (its
curve fitted toward the plateau of all runs together); the estimate is their geometric mean and its interval a Student t interval over the seeds' log thresholds, so
it widens with the seed-to-seed spread and with fewer seeds (none from one seed). Runs that did not learn
their training instructions (`learned` false) are left out, and counted.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from instdiv.engine import reports
from instdiv.engine.findings import seed_interval as mean_interval
from instdiv.engine.tracking import repo_root as tracking_root
from instdiv.errors import DataError

# A seed's crossing further than this factor outside the I it measured is an extrapolation: not located.
_REACH = 2.0


def logistic(x, plateau, steepness, midpoint):
    return plateau / (1.0 + np.exp(-steepness * (x - midpoint)))


def fit(instructions, accuracy, plateau: float | None = None) -> tuple[float, float, float] | None:
    """(plateau, steepness, midpoint in log I) by least squares, or None when the fit does not converge. Given
    `plateau`, only steepness and midpoint are fitted."""
    x = np.log(np.asarray(instructions, dtype=float))
    y = np.asarray(accuracy, dtype=float)
    if len(np.unique(x)) < (2 if plateau else 3):
        return None
    span = max(x.max() - x.min(), 1e-3)
    lower, upper = [1e-3, x.min() - span], [100.0, x.max() + span]
    p0 = [4.0 / span, float(np.median(x))]
    if plateau is None:
        model = logistic
        p0, lower, upper = [max(y.max(), 0.05), *p0], [0.01, *lower], [1.0, *upper]
    else:
        def model(v, steepness, midpoint):
            return logistic(v, plateau, steepness, midpoint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(model, x, y, p0=p0, bounds=(lower, upper), maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    popt = [float(v) for v in popt]
    return tuple(popt) if plateau is None else (float(plateau), *popt)


def crossing(popt, fraction: float) -> float:
    """The I where the fitted curve reaches `fraction` of its plateau; NaN without a fit."""
    if popt is None:
        return math.nan
    _, steepness, midpoint = popt
    return float(math.exp(midpoint - math.log(1.0 / fraction - 1.0) / steepness))


def seed_thresholds(instructions, accuracy, seeds, fraction: float, plateau: float | None = None) -> dict:
    """Each seed's threshold from its own runs (NaN where they do not locate it). Given `plateau` (the pooled
    fit's), each seed's curve is fitted toward it: one plateau for the study, so a seed whose top run was left
    out still has its threshold, and each threshold is measured against the same target."""
    frame = pd.DataFrame({"i": np.asarray(instructions, float), "a": np.asarray(accuracy, float),
                          "seed": np.asarray(seeds)})
    out = {}
    for seed, runs in frame.groupby("seed"):
        value = crossing(fit(runs["i"], runs["a"], plateau), fraction)
        inside = runs["i"].min() / _REACH <= value <= runs["i"].max() * _REACH if math.isfinite(value) else False
        out[seed.item() if hasattr(seed, "item") else seed] = value if inside else math.nan
    return out


def seed_interval(values, confidence: float) -> tuple[float, float, float]:
    """Geometric mean of positive values and its Student t interval over them (NaN bounds below 2 values):
    thresholds vary by factors, so the interval is taken on their logarithms."""
    center, lo, hi = mean_interval(np.log([v for v in values if math.isfinite(v)]), confidence)
    return tuple(float(np.exp(v)) for v in (center, lo, hi))


def estimate(instructions, accuracy, seeds, fraction: float = 0.5, confidence: float = 0.9) -> dict:
    """Threshold (where accuracy reaches `fraction` of its plateau), its interval over seeds, and the pooled fit
    (drawn in the figure)."""
    pooled = fit(instructions, accuracy)
    plateau = pooled[0] if pooled else math.nan
    per_seed = seed_thresholds(instructions, accuracy, seeds, fraction, pooled[0] if pooled else None)
    point, lo, hi = seed_interval(per_seed.values(), confidence)
    return {"threshold_instructions": point, "ci_low": lo, "ci_high": hi, "confidence": confidence,
            "interval": "Student t over the seeds' log thresholds (one logistic fit per seed)",
            "target_fraction_of_plateau": fraction, "target_accuracy": round(fraction * plateau, 4),
            "seeds": len(per_seed), "seeds_located": sum(math.isfinite(v) for v in per_seed.values()),
            "per_seed": {str(k): (round(v, 1) if math.isfinite(v) else None) for k, v in per_seed.items()},
            "runs_fitted": int(len(np.asarray(instructions))),
            "fit": None if pooled is None else dict(zip(("plateau", "steepness", "midpoint_log_i"), pooled))}


def _control(spec: str, x: str, metric: str, cfg) -> tuple[pd.DataFrame, dict] | None:
    """A control arm (RUNS.csv[:key=value]: e.g. the holdout experiment's runs with the unseen rules' strings
    held out), fitted as the study is; None while its file does not exist yet."""
    path, _, where = spec.partition(":")
    if not Path(path).is_file():
        return None
    runs = pd.read_csv(path)
    if where:
        key, _, value = where.partition("=")
        if key not in runs:
            raise DataError(f"--control {spec}: {path} has no column '{key}'")
        runs = runs[runs[key].astype(str) == value]
    runs["learned"] = runs["learned"].astype(bool) if "learned" in runs else True
    used = runs[runs["learned"]]
    if used[x].nunique() < 3:
        return None
    est = estimate(used[x], used[metric], used["seed"], cfg.target, cfg.confidence)
    est.update(arm=where or path, metric=metric, runs=int(len(runs)), untrained_runs=int((~runs["learned"]).sum()),
               **{f"mean_{c}": round(float(used[c].mean()), 4) for c in runs if c.endswith("_in_train")})
    return runs, est


def _sides(used: pd.DataFrame, x: str, metric: str, est: dict) -> dict | None:
    """The paper's other half of the claim: no generalization well below the threshold (I <= half of it), and
    nearly the plateau well above it (I >= twice it): the extreme runs on each side, every seed."""
    t = est["threshold_instructions"]
    if not math.isfinite(t):
        return None
    below, above = used[used[x] <= t / 2], used[used[x] >= 2 * t]
    if not len(below) or not len(above):
        return None
    return {"below_instructions": sorted(int(v) for v in below[x].unique()), "below_max": float(below[metric].max()),
            "above_instructions": sorted(int(v) for v in above[x].unique()), "above_min": float(above[metric].min())}


def _summary(est: dict) -> dict:
    """The estimate's headline numbers (and the control arm's threshold), for reports/sweep/metrics.json."""
    keys = ("threshold_instructions", "ci_low", "ci_high", "seeds", "seeds_located", "runs", "untrained_runs",
            "mean_unseen_patterns_in_train")
    out = {k.removesuffix("_instructions"): est.get(k) for k in keys}
    out["plateau"] = (est.get("fit") or {}).get("plateau")
    c = est.get("control")
    if c:
        out["control"] = {k.removesuffix("_instructions"): c.get(k)
                          for k in ("threshold_instructions", "ci_low", "ci_high", "untrained_runs")}
    return out


def run(params, trials_path: Path, out_dir: Path, threshold_path: Path, control: str | None = None) -> dict:
    """The `estimate` stage: read the sweep's trials, fit, and write the threshold and, in `out_dir`, the
    points, the fitted curve and the figures (with a control arm beside the study, given `control`)."""
    cfg, task = params.sweep, params.task()
    try:
        trials = pd.read_csv(trials_path)
    except FileNotFoundError:
        raise DataError(f"{trials_path} not found; run the sweep first: dvc repro sweep") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        raise DataError(f"{trials_path} is corrupt; rerun the sweep: dvc repro -f sweep") from None
    x = task.count_axis
    done = trials[trials["state"] == "COMPLETE"].copy() if "state" in trials else trials.iloc[:0]
    if cfg.metric not in done or x not in done:
        raise DataError(f"{trials_path} holds no completed trial with {cfg.metric}; finish the sweep: dvc repro sweep")
    from instdiv.engine.findings import judge_runs

    done["learned"] = judge_runs(task, done, params.evaluate.learned_at)
    used = done[done["learned"]]
    if used[x].nunique() < 3:
        raise DataError(f"{trials_path}: {len(used)} trained runs at {used[x].nunique()} values of {x} "
                        f"({len(done) - len(used)} more did not learn their training instructions); a fit needs "
                        "3 values: raise train.max_steps or sweep.max_trials, then dvc repro sweep")
    seeds = used["seed"] if "seed" in used else pd.Series(0, index=used.index)
    est = estimate(used[x], used[cfg.metric], seeds, cfg.target, cfg.confidence)
    overlap = [c for c in done if c.endswith("_in_train")]
    est.update(metric=cfg.metric, runs=int(len(done)), untrained_runs=int((~done["learned"]).sum()),
               **{f"mean_{c}": round(float(used[c].mean()), 4) for c in overlap})
    est["sides"] = _sides(used, x, cfg.metric, est)
    arm = _control(control, x, cfg.metric, cfg) if control else None
    if arm is not None:
        est["control"] = arm[1]
    threshold_path.parent.mkdir(parents=True, exist_ok=True)
    threshold_path.write_text(json.dumps(reports.json_safe(est), indent=2) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    # the numbers DVC compares across experiments; threshold.json keeps the whole estimate
    (out_dir / "metrics.json").write_text(json.dumps(reports.numbers(_summary(est)), indent=2) + "\n")
    cols = [x, "seed", "learned", *task.metrics, cfg.metric, *task.learned_metrics, *overlap, *cfg.axes]
    done.sort_values([x, "seed"] if "seed" in done else x)[[c for c in dict.fromkeys(cols) if c in done]] \
        .to_csv(out_dir / "points.csv", index=False)
    grid = np.geomspace(done[x].min(), done[x].max(), 60)
    if est["fit"]:
        f = est["fit"]
        fitted = logistic(np.log(grid), f["plateau"], f["steepness"], f["midpoint_log_i"])
        pd.DataFrame({x: grid.round(1), "fit": fitted.round(4)}).to_csv(out_dir / "fit.csv", index=False)
    pruned = trials[trials["state"] == "PRUNED"] if "state" in trials else trials.iloc[:0]
    phase_diagram(done, est, cfg.metric, x, task.count_label, task.seen_metric, out_dir / "phase_diagram.png",
                  pruned, arm)
    heatmap(used, cfg.metric, list(cfg.axes), x, task.count_label, out_dir / "heatmap.png")
    _log_to_study_run(params, est, [threshold_path, out_dir / "phase_diagram.png"])
    if threshold_path.parent.resolve() == (tracking_root() / "reports").resolve():
        from instdiv.engine import experiments

        experiments.write_index()  # its first row: this threshold beside the paper's
    return est


def _log_to_study_run(params, est: dict, files: list[Path]) -> None:
    """The threshold, its interval and the figure on the study's MLflow run, beside its nested trial runs."""
    from instdiv.engine import tracking
    from instdiv.engine.sweep.study import parent_run

    run_id = parent_run(params)
    if run_id is None:
        return
    scores = {k: est[k] for k in ("threshold_instructions", "ci_low", "ci_high") if math.isfinite(est[k])}
    scores.update(runs=est["runs"], untrained_runs=est["untrained_runs"], seeds_located=est["seeds_located"])
    client = tracking.client(params.tracking)
    for key, value in scores.items():
        client.log_metric(run_id, f"estimate/{key}", value)
    for path in files:
        client.log_artifact(run_id, str(path), "estimate")


def headline(est: dict) -> str:
    t = est["threshold_instructions"]
    runs = (f"{est['seeds']} seeds, {est['runs']} training runs"
            + (f", {est['untrained_runs']} of them untrained and left out" if est.get("untrained_runs") else ""))
    if t is None or not math.isfinite(t):
        return (f"threshold: not located by any seed ({runs}): widen sweep.instructions around the transition "
                "or raise sweep.max_trials")
    ci = f"{est['ci_low']:.0f}-{est['ci_high']:.0f}" if est["ci_low"] is not None and math.isfinite(est["ci_low"]) \
        else "undetermined (one seed located it)"
    return f"threshold: {t:.0f} instructions ({est['confidence']:.0%} interval over seeds {ci}); {runs}"


def _per_point(done: pd.DataFrame, x: str, metric: str, confidence: float) -> pd.DataFrame:
    """Mean over seeds at each I with its Student t interval (the seeds' own spread)."""
    rows = []
    for value, runs in done.groupby(x):
        mean, _, high = mean_interval(runs[metric].to_numpy(float), confidence)
        rows.append({x: value, "mean": mean, "half": high - mean, "n": len(runs)})
    return pd.DataFrame(rows)


def phase_diagram(done: pd.DataFrame, est: dict, metric: str, x: str, x_label: str, seen: str | None,
                  path: Path, pruned: pd.DataFrame | None = None, control: tuple | None = None) -> None:
    """The metric against I on a log axis: every seed's run (hollow where the model did not learn its training
    instructions), the mean over trained seeds with its interval, the pooled fit, the threshold and its
    interval over seeds; beside them the score on the training instructions (`seen`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 4.6), dpi=120)
    learned = done["learned"].astype(bool) if "learned" in done else pd.Series(True, index=done.index)
    if seen in done:
        ax.scatter(done[x], done[seen], marker="s", s=18, color="tab:gray", alpha=0.6,
                   label=f"seen instructions ({seen}), each run")
    ax.scatter(done.loc[learned, x], done.loc[learned, metric], s=22, color="tab:blue", alpha=0.55, zorder=3,
               label=f"unseen instructions ({metric}), each seed")
    if (~learned).any():
        ax.scatter(done.loc[~learned, x], done.loc[~learned, metric], s=30, facecolors="none",
                   edgecolors="tab:red", zorder=3, label=f"untrained runs ({(~learned).sum()}, left out)")
    means = _per_point(done[learned], x, metric, est["confidence"])
    if len(means):
        ax.errorbar(means[x], means["mean"], yerr=means["half"].fillna(0), fmt="D", ms=5, color="navy", capsize=3,
                    zorder=4, label=f"mean over seeds, {est['confidence']:.0%} interval")
    if pruned is not None and len(pruned) and "last_validation" in pruned:
        ax.scatter(pruned[x], pruned["last_validation"], marker="x", color="tab:red", zorder=3,
                   label="pruned trials (last validation score)")
    if est["fit"]:
        f = est["fit"]
        grid = np.geomspace(done[x].min(), done[x].max(), 200)
        ax.plot(grid, logistic(np.log(grid), f["plateau"], f["steepness"], f["midpoint_log_i"]),
                color="tab:blue", lw=1, label="logistic fit (all trained runs)")
    if control is not None:
        runs, c = control
        trained = runs[runs["learned"]]
        means = _per_point(trained, x, metric, c["confidence"])
        ax.errorbar(means[x], means["mean"], yerr=means["half"].fillna(0), fmt="s--", ms=4, color="tab:green",
                    capsize=3, zorder=4, label=f"control: {c['arm']} (mean over seeds)")
        ct = c["threshold_instructions"]
        if ct is not None and math.isfinite(ct):
            ci = f", {c['ci_low']:.0f}-{c['ci_high']:.0f}" if math.isfinite(c["ci_low"]) else ""
            ax.axvline(ct, color="tab:green", ls="--", lw=1, label=f"control threshold {ct:.0f}{ci}")
    t = est["threshold_instructions"]
    if t is not None and math.isfinite(t):
        if est["ci_low"] is not None and math.isfinite(est["ci_low"]):
            ax.axvspan(est["ci_low"], est["ci_high"], color="tab:orange", alpha=0.2,
                       label=f"{est['confidence']:.0%} interval over {est['seeds_located']} seeds "
                             f"{est['ci_low']:.0f}-{est['ci_high']:.0f}")
        ax.axvline(t, color="tab:orange", label=f"threshold {t:.0f} ({est['target_fraction_of_plateau']:.0%} of "
                                                f"the plateau)")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{x_label} (log scale)")
    ax.set_ylabel("exact-match accuracy" if "accuracy" in metric else metric.replace("_", " "))
    ax.set_title(f"Generalization to unseen instructions ({len(done)} runs, {est['seeds']} seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
