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

from instdiv.engine import figures, reports, stats
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


outcome_estimate = stats.outcome_estimate


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
        own = frame[seen].fillna(1.0) if seen and seen in frame else 1.0
        g = stats.outcomes(frame[metric], own, cut)
        return {(int(i), int(s)): bool(v) for i, s, v in zip(frame[x], frame["seed"], g)}

    paired = stats.paired_outcomes(outcome_map(study), outcome_map(control))
    ratio = stats.ratio_interval(*((e["threshold_instructions"], e["ci_low"], e["ci_high"]) for e in (est, c)),
                                 confidence=confidence, df=(est["seeds"] - 1, c["seeds"] - 1))
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
            "mean_unseen_patterns_in_train", "width_ratio", "transition_min_runs")
    out = {k.removesuffix("_instructions"): est.get(k) for k in keys if k in est}
    out["plateau"] = (est.get("fit") or {}).get("plateau")
    if est.get("all_runs"):
        out["all_runs"] = {k: est["all_runs"].get(k) for k in ("i50", "ci_low", "ci_high")}
    if est.get("coverage"):
        out["coverage"] = est["coverage"]["coverage"]
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
        figures.outcome_diagram(done, est, cfg.metric, x, task.count_label, task.seen_metric, out_dir / "phase_diagram.png",
                        arm, band)
    else:
        figures.phase_diagram(done, est, cfg.metric, x, task.count_label, task.seen_metric, out_dir / "phase_diagram.png",
                      pruned, arm)
    figures.outcome_histogram(done, est if cfg.mode == "outcomes" else est["outcomes"], cfg.metric, x, task.seen_metric,
                      out_dir / "outcomes.png")
    figures.heatmap(used, cfg.metric, list(cfg.axes), x, task.count_label, out_dir / "heatmap.png")
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


