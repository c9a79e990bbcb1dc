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
from pathlib import Path

import numpy as np
import pandas as pd

from instdiv.engine import reports, stats
from instdiv.engine.stats import mean_interval
from instdiv.engine.tracking import repo_root as tracking_root
from instdiv.errors import DataError

# A seed's crossing further than this factor outside the I it measured is an extrapolation: not located.
_REACH = 2.0


logistic, fit, crossing = stats.logistic, stats.fit_curve, stats.crossing


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


seed_interval = stats.geometric_interval


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


def outcome_estimate(runs: pd.DataFrame, x: str, metric: str, seen: str | None, cut: float, confidence: float,
                     values: list[int] | None = None, coverage_studies: int = 0, progress=None) -> dict:
    """I_50 from the runs' outcomes (engine/stats.py): over the runs that learned their training rules, and
    over all runs beside it; the runs and outcomes at each I, the transition's I and how many runs each has,
    I_50 at other cuts (so the result can be seen not to hinge on the cut) and, given `coverage_studies`, the
    interval's coverage in that many simulated studies of the same design and size."""
    own = runs[seen] if seen and seen in runs else pd.Series(1.0, index=runs.index)
    runs = runs.assign(generalized=stats.outcomes(runs[metric], own.fillna(0.0), cut))
    seeds = runs["seed"] if "seed" in runs else pd.Series(0, index=runs.index)
    runs = runs.assign(seed=seeds)
    learned = runs["learned"].astype(bool)

    def one(frame: pd.DataFrame) -> dict:
        fit_ = stats.fit_i50(frame[x], frame["generalized"])
        i50, lo, hi = stats.bootstrap_i50(frame[x], frame["generalized"], frame["seed"], confidence)
        return {"i50": i50, "ci_low": lo, "ci_high": hi, "runs": int(len(frame)),
                "slope": None if fit_ is None else fit_["slope"],
                "separated": None if fit_ is None else fit_["separated"]}

    gated, every = one(runs[learned]), one(runs)
    table = runs.groupby(x).agg(runs=("generalized", "size"), generalized=("generalized", "sum"),
                                untrained=("learned", lambda v: int((~v.astype(bool)).sum()))).reset_index()
    out = {"threshold_instructions": gated["i50"], "ci_low": gated["ci_low"], "ci_high": gated["ci_high"],
           "confidence": confidence, "slope": gated["slope"], "separated": gated["separated"],
           "method": "binomial GLM of generalized on log I (statsmodels); interval: log I_50 +- t x its bootstrap "
                     "standard error over seeds",
           "outcome": f"generalized: {metric} >= {cut} x the run's own {seen or 'plateau (1.0)'}",
           "cut": cut, "runs_fitted": gated["runs"], "all_runs": every,
           "seeds": int(runs["seed"].nunique()),
           "by_instructions": [{x: int(r[x]), "runs": int(r["runs"]), "generalized": int(r["generalized"]),
                                "untrained": int(r["untrained"])} for r in table.to_dict("records")],
           "cut_sensitivity": {str(c): stats.fit_i50(runs.loc[learned, x], stats.outcomes(
               runs.loc[learned, metric], own[learned].fillna(0.0), c)) for c in (0.3, 0.7)}}
    out["cut_sensitivity"] = {c: (None if f is None else f["i50"]) for c, f in out["cut_sensitivity"].items()}
    token = f"{metric.removesuffix('accuracy')}token_accuracy"
    trained = runs[learned]
    out["sharpness"] = {"measure": f"the factor of {x} over which the mean at each {x} rises from 10% to 90% of "
                                   "its range", metric: stats.rise_span(trained[x], trained[metric])}
    if token in runs:
        out["sharpness"][token] = stats.rise_span(trained[x], trained[token])
        out["sharpness"]["runs_with_" + token] = int(trained[token].notna().sum())
    i50, slope = gated["i50"], gated["slope"]
    if math.isfinite(i50) and slope is not None:
        ladder = values or sorted(int(v) for v in runs[x].unique())
        inside = stats.transition(i50, slope, ladder)
        counts = dict(zip(table[x].astype(int), table["runs"]))
        out["transition"] = {str(i): int(counts.get(i, 0)) for i in inside}
        out["transition_min_runs"] = min(out["transition"].values())
        if math.isfinite(gated["ci_low"]) and gated["ci_low"] > 0:
            out["width_ratio"] = gated["ci_high"] / gated["ci_low"]
        if coverage_studies:
            out["coverage"] = stats.coverage(coverage_studies, ladder, len(runs), i50,
                                             min(slope, 12.0) if math.isfinite(slope) else 12.0, seed_sd=0.25,
                                             confidence=confidence, n_boot=200, progress=progress)
    return out


def _control(spec: str, x: str, metric: str, cfg, seen: str | None = None) -> tuple[pd.DataFrame, dict] | None:
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
    if cfg.mode == "outcomes":  # fitted as the study is: from outcomes, the mean curve beside
        est = {**outcome_estimate(runs, x, metric, seen, cfg.target, cfg.confidence), "curve": est,
               "seeds_located": None}
    est.update(arm=where or path, metric=metric, runs=int(len(runs)), untrained_runs=int((~runs["learned"]).sum()),
               **{f"mean_{c}": round(float(used[c].mean()), 4) for c in runs if c.endswith("_in_train")})
    return runs, est


def _versus(study: pd.DataFrame, control: pd.DataFrame, x: str, metric: str, seen: str | None, cut: float,
            est: dict, c: dict, confidence: float) -> dict:
    """The control against the study: paired on the runs both have (the same I and seed: the same draw of
    rules and initial weights), and the ratio of their I_50 with its interval."""
    def outcome_map(frame):
        own = frame[seen].fillna(0.0) if seen and seen in frame else 1.0
        g = stats.outcomes(frame[metric], own, cut)
        return {(int(i), int(s)): bool(v) for i, s, v in zip(frame[x], frame["seed"], g)}

    paired = stats.paired_outcomes(outcome_map(study), outcome_map(control))
    ratio = stats.ratio_interval(*((e["threshold_instructions"], e["ci_low"], e["ci_high"]) for e in (est, c)),
                                 confidence=confidence)
    return {**paired, "i50_ratio": ratio[0], "ratio_low": ratio[1], "ratio_high": ratio[2]}


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


def run(params, trials_path: Path, out_dir: Path, threshold_path: Path, control: str | None = None,
        band: tuple[float, float] | None = None, coverage_studies: int = 200) -> dict:
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
    curve = estimate(used[x], used[cfg.metric], seeds, cfg.target, cfg.confidence)
    overlap = [c for c in done if c.endswith("_in_train")]
    if cfg.mode == "outcomes":
        from instdiv.engine.sweep.study import ladder_of

        def shown(k: int) -> None:
            if k % 50 == 0:
                print(f"coverage of the interval: {k} of {coverage_studies} simulated studies", flush=True)

        # the threshold from the runs' outcomes; the mean curve's per-seed estimate stays beside it
        est = outcome_estimate(done, x, cfg.metric, task.seen_metric, cfg.target, cfg.confidence,
                               ladder_of(params), coverage_studies=coverage_studies, progress=shown)
        est["curve"] = curve
        est["fit"], est["seeds_located"] = curve["fit"], None
    else:
        est = curve
        est["outcomes"] = outcome_estimate(done, x, cfg.metric, task.seen_metric, cfg.target, cfg.confidence)
    est.update(mode=cfg.mode, metric=cfg.metric, runs=int(len(done)), untrained_runs=int((~done["learned"]).sum()),
               **{f"mean_{c}": round(float(used[c].mean()), 4) for c in overlap})
    est["sides"] = _sides(used, x, cfg.metric, est)
    if band:
        est["paper_band"] = list(band)
        lo_, hi_ = est.get("ci_low"), est.get("ci_high")
        if lo_ is not None and hi_ is not None and math.isfinite(lo_) and math.isfinite(hi_):
            est["paper_band_position"] = stats.band_position(lo_, hi_, band)
    arm = _control(control, x, cfg.metric, cfg, task.seen_metric) if control else None
    if arm is not None:
        est["control"] = arm[1]
        if cfg.mode == "outcomes":
            est["control"]["versus_study"] = _versus(done, arm[0], x, cfg.metric, task.seen_metric, cfg.target,
                                                     est, arm[1], cfg.confidence)
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
    if cfg.mode == "outcomes":
        outcome_diagram(done, est, cfg.metric, x, task.count_label, task.seen_metric, out_dir / "phase_diagram.png",
                        arm, band)
    else:
        phase_diagram(done, est, cfg.metric, x, task.count_label, task.seen_metric, out_dir / "phase_diagram.png",
                      pruned, arm)
    outcome_histogram(done, est if cfg.mode == "outcomes" else est["outcomes"], cfg.metric, x, task.seen_metric,
                      out_dir / "outcomes.png")
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
    scores = {k: v for k, v in scores.items() if v is not None}
    client = tracking.client(params.tracking)
    for key, value in scores.items():
        client.log_metric(run_id, f"estimate/{key}", value)
    for path in files:
        client.log_artifact(run_id, str(path), "estimate")


def headline(est: dict) -> str:
    t = est["threshold_instructions"]
    if est.get("mode") == "outcomes" or "all_runs" in est:
        return _outcome_headline(est)
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


def _outcome_headline(est: dict) -> str:
    t, lo, hi = est["threshold_instructions"], est.get("ci_low"), est.get("ci_high")
    runs = f"{est.get('runs', est.get('runs_fitted'))} runs"
    if est.get("untrained_runs"):
        runs += f", {est['untrained_runs']} untrained (all runs: " + _i50(est["all_runs"]) + ")"
    if t is None or not math.isfinite(t):
        return f"I_50: not located ({runs}): every run had the same outcome; widen sweep.instructions"
    ci = f"{est['confidence']:.0%} interval {lo:.0f}-{hi:.0f}" if lo is not None and math.isfinite(lo) else \
        "no interval (one seed)"
    return f"I_50: {t:.0f} instructions ({ci}); half of the runs generalize there; {runs}"


def _i50(part: dict) -> str:
    if part.get("i50") is None or not math.isfinite(part["i50"]):
        return "not located"
    if part.get("ci_low") is None or not math.isfinite(part["ci_low"]):
        return f"{part['i50']:.0f}"
    return f"{part['i50']:.0f}, {part['ci_low']:.0f}-{part['ci_high']:.0f}"


def _runs_by_seed(ax, runs: pd.DataFrame, x: str, metric: str, seen: str | None, cut: float) -> None:
    """Each run as a dot coloured by its seed (hollow: it did not learn its training rules), spread a little
    along x so that runs at one I do not hide each other."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    top = max(1, int(runs["seed"].max())) if len(runs) else 1
    for i, group in runs.groupby(x):
        n = len(group)
        offsets = np.exp((np.arange(n) - (n - 1) / 2) * 0.012)
        for off, row in zip(offsets, group.sort_values("seed").to_dict("records")):
            color = cmap(row["seed"] / top)
            kw = {"color": color} if row["learned"] else {"facecolors": "none", "edgecolors": color}
            ax.scatter(i * off, row[metric], s=16, alpha=0.85, zorder=3, **kw)


def outcome_diagram(done: pd.DataFrame, est: dict, metric: str, x: str, x_label: str, seen: str | None,
                    path: Path, control: tuple | None = None, band: tuple[float, float] | None = None) -> None:
    """The phase diagram: every run coloured by seed, the share of runs that generalized at each I, the fitted
    probability of generalizing with the band its I_50 interval spans, I_50, and the paper's band; the control
    arm in a panel beside it, drawn the same way (points and its curve, no error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("study", done, est)] + ([("control: " + control[1]["arm"], control[0], control[1])] if control else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 2.4, 4.8), dpi=120, squeeze=False,
                             sharey=True)
    lo_x = min(float(p[1][x].min()) for p in panels) / 1.3
    hi_x = max(float(p[1][x].max()) for p in panels) * 1.3
    grid = np.geomspace(lo_x, hi_x, 300)
    for ax, (title, runs, e) in zip(axes[0], panels):
        runs = runs.copy()
        runs["learned"] = runs["learned"].astype(bool) if "learned" in runs else True
        runs["seed"] = runs["seed"] if "seed" in runs else 0
        if band:
            ax.axvspan(*band, color="0.85", zorder=0, label=f"paper: {band[0]:g}-{band[1]:g}")
        token = f"{metric.removesuffix('accuracy')}token_accuracy"
        if token in runs and runs[token].notna().any():
            ax.scatter(runs[x], runs[token], marker="x", s=12, color="0.55", zorder=2,
                       label=f"{token.replace('_', ' ')} (each run)")
        _runs_by_seed(ax, runs, x, metric, seen, e.get("cut", 0.5))
        shares = pd.DataFrame(e.get("by_instructions", []))
        if len(shares):
            share = shares["generalized"] / shares["runs"]
            ax.scatter(shares[x], share, marker="D", s=34, color="black", zorder=4,
                       label="share of runs that generalized")
            for i, k, n in zip(shares[x], shares["generalized"], shares["runs"]):
                ax.annotate(f"{k}/{n}", (i, -0.07), ha="center", fontsize=6.5, annotation_clip=False)
        t, lo, hi = e.get("threshold_instructions"), e.get("ci_low"), e.get("ci_high")
        slope = e.get("slope")
        if t is not None and math.isfinite(t) and slope is not None:
            ax.plot(grid, stats.probability_curve(t, slope, grid), color="tab:red", lw=1.5, zorder=4,
                    label="fitted P(generalized)")
            if lo is not None and math.isfinite(lo):
                low_c, high_c = (stats.probability_curve(v, slope, grid) for v in (hi, lo))
                ax.fill_between(grid, low_c, high_c, color="tab:red", alpha=0.15, zorder=1,
                                label=f"I_50 {e['confidence']:.0%} interval {lo:.0f}-{hi:.0f}")
            ax.axvline(t, color="tab:red", ls="--", lw=1, label=f"I_50 = {t:.0f}")
        ax.set_xscale("log")
        ax.set_xlim(lo_x, hi_x)
        ax.set_ylim(-0.1, 1.03)
        ax.set_xlabel(f"{x_label} (log scale)")
        n_seeds = int(runs["seed"].nunique())
        ax.set_title(f"{title}: {len(runs)} runs, {n_seeds} seeds, {int((~runs['learned']).sum())} untrained",
                     fontsize=9)
    axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} (dots: runs, colour: seed) / probability")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="", marker="o", mfc="none", mec="0.4"))
    labels.append("hollow: did not learn its training rules")
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(f"Generalization to unseen instructions: each run generalizes or not ({est.get('outcome', '')})",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.02, 1 - 2.4 / (6.2 * len(panels) + 2.4), 0.95))
    fig.savefig(path)
    plt.close(fig)


def outcome_histogram(done: pd.DataFrame, est: dict, metric: str, x: str, seen: str | None, path: Path) -> None:
    """Per-run unseen score as a share of the run's own seen score, a histogram per I: bimodal when runs
    memorize or generalize; the cut that decides the outcome is drawn, so its choice can be judged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = done[seen].clip(lower=1e-9) if seen and seen in done else 1.0
    ratio = (done[metric] / own).clip(0, 1.05)
    values = sorted(done[x].unique())
    fig, axes = plt.subplots(len(values), 1, figsize=(6.0, 0.9 + 0.7 * len(values)), dpi=120, sharex=True,
                             squeeze=False)
    bins = np.linspace(0, 1.05, 22)
    for ax, i in zip(axes[:, 0], values):
        ax.hist(ratio[done[x] == i], bins=bins, color="tab:blue")
        ax.axvline(est.get("cut", 0.5), color="tab:red", lw=1)
        ax.set_ylabel(f"{int(i)}", rotation=0, ha="right", va="center", fontsize=8)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel(f"{metric.replace('_', ' ')} / the run's own {seen or 'plateau'} (red: the cut)")
    fig.suptitle("Runs per I (rows): memorize (left) or generalize (right)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
