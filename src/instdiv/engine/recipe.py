"""An experiment over the training recipe: is the threshold a property of the data or of how the model is trained?

The declaration (experiments/<name>.yaml, `recipe`) lists recipe keys (`section.key`: train.warmup_frac,
train.lr, train.max_steps, model.d_model, ...) and the values to try. One axis at a time moves away from the
reference recipe (params.yaml), and each value is its own outcomes-mode study (one journal holds them all,
each named by its settings' hash), so its runs are placed where they inform that setting's I_50. The
reference's I_50 is the default study's (reports/threshold.json), cited, not trained again. Settings run in
the order declared; the report is written after each, so an interrupted experiment reports what it has and
resumes from its journal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from instdiv.engine import reports, stats, sweep
from instdiv.errors import ConfigError

MOVES, ALIKE, UNCLEAR = "moves", "the same within x{factor}", "cannot tell"


def settings(exp, params) -> list[tuple[str, object, object]]:
    """(axis, value, params) for every declared value, in the declared order, but the reference recipe's own
    value (at another scale a declared value may be the reference's: the default study measures it)."""
    out = []
    for axis, values in exp.recipe.items():
        section, _, key = axis.partition(".")
        for value in values:
            if getattr(getattr(params, section), key) == value:
                continue
            p = params.replace(**{section: getattr(params, section).replace(**{key: value})})
            out.append((axis, value, p))
    return out


def check(exp, params) -> None:
    """Every recipe key names a setting of its section and every value is valid there, before any training."""
    for axis, values in exp.recipe.items():
        section, _, key = axis.partition(".")
        if not key or not hasattr(params, section) or key not in type(getattr(params, section)).model_fields:
            raise ConfigError(f"recipe.{axis}: not a setting; name one as section.key, e.g. train.warmup_frac")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"recipe.{axis}: give a list of values to try")
    for axis, value, p in settings(exp, params):
        try:
            sweep.check(p)
        except ConfigError as exc:
            raise ConfigError(f"recipe {axis}={value}: {exc}") from None


def run(name: str, exp, params, out: Path, after=lambda: None) -> dict:
    """Each setting's study in turn (resuming any that is part-done), the report after each (then `after`:
    the index)."""
    check(exp, params)
    for axis, value, p in settings(exp, params):
        print(f"recipe {axis}={value}: study {sweep.study_name(p)} ({p.sweep.max_trials} runs)", flush=True)
        sweep.run(p, out / "setting-trials.csv")
        (out / "setting-trials.csv").unlink(missing_ok=True)
        result = report(name, exp, params, out)
        after()
    return result


def _trials(exp, params) -> pd.DataFrame:
    """Every setting's trials so far, with its axis and value; settings not started have none."""
    import optuna

    frames = []
    for axis, value, p in settings(exp, params):
        storage = sweep.open_storage(p)
        if sweep.study_name(p) not in optuna.get_all_study_names(storage):
            continue
        study = optuna.load_study(study_name=sweep.study_name(p), storage=storage)
        frame = sweep.trials_frame(study, sweep.axis_names(p))
        if len(frame):
            frames.append(frame.assign(axis=axis, value=value))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _reference() -> dict | None:
    """The reference recipe's I_50: the default study's estimate (reports/threshold.json), when it is one."""
    path = Path("reports") / "threshold.json"
    if not path.is_file():
        return None
    est = json.loads(path.read_text())
    return est if est.get("mode") == "outcomes" else None


def judge(ref: dict | None, est: dict, confidence: float, factor: float) -> dict:
    """A setting's I_50 against the reference's: their ratio with its interval, and whether it moves (the
    interval excludes 1), stays within x`factor` (the interval inside 1/factor-factor) or cannot tell."""
    if ref is None:
        return {"ratio": None, "verdict": UNCLEAR, "why": "no reference estimate (dvc repro estimate)"}
    def triple(e):
        return tuple(math.nan if e.get(k) is None else e[k] for k in ("threshold_instructions", "ci_low", "ci_high"))

    ratio, lo, hi = stats.ratio_interval(triple(ref), triple(est), confidence,
                                         df=(ref.get("seeds", 2) - 1, est.get("seeds", 2) - 1))
    if not math.isfinite(lo):
        return {"ratio": None, "verdict": UNCLEAR, "why": "no interval for this setting yet"}
    verdict = MOVES if lo > 1 or hi < 1 else ALIKE.format(factor=factor) if 1 / factor < lo and hi < factor \
        else UNCLEAR
    return {"ratio": ratio, "ratio_low": lo, "ratio_high": hi, "verdict": verdict,
            "why": f"I_50 x{ratio:.2f} the reference's ({confidence:.0%} interval x{lo:.2f}-x{hi:.2f})"}


def report(name: str, exp, params, out: Path) -> dict:
    """reports/<name>/: trials.csv (every setting's), points.csv (one row a setting: runs, I_50, interval,
    ratio to the reference, verdict), runs.csv, figure.png, report.json and metrics.json."""
    task = params.task()
    x, cfg = task.count_axis, params.sweep
    trials = _trials(exp, params)
    ref = _reference()
    rows = []
    if ref:
        rows.append({"axis": "reference", "value": "params.yaml", "runs": ref["runs"],
                     "untrained": ref["untrained_runs"], "seeds": ref.get("seeds"), "i50": ref["threshold_instructions"],
                     "ci_low": ref["ci_low"], "ci_high": ref["ci_high"], "all_runs_i50": ref["all_runs"]["i50"],
                     "verdict": "reference", "why": "the default study (reports/threshold.json)"})
    done = trials[trials["state"] == "COMPLETE"].copy() if len(trials) else trials
    if len(done):
        from instdiv.engine.findings import judge_runs

        done["learned"] = judge_runs(task, done, params.evaluate.learned_at)
        resolved = {(a, str(v)): s for a, v, s in settings(exp, params)}
        for (axis, value), runs in done.groupby(["axis", "value"], sort=False):
            p = resolved[(axis, str(value))]
            est = stats.outcome_estimate(runs, x, cfg.metric, task.seen_metric, cfg.target, cfg.confidence,
                                   sweep.ladder_of(p))
            verdict = judge(ref, est, cfg.confidence, exp.recipe_factor)
            rows.append({"axis": axis, "value": value, "runs": len(runs), "untrained": int((~runs["learned"]).sum()),
                         "seeds": est["seeds"],
                         "i50": est["threshold_instructions"], "ci_low": est["ci_low"], "ci_high": est["ci_high"],
                         "all_runs_i50": est["all_runs"]["i50"], "minutes": float(runs["fit_seconds"].sum() / 60)
                         if "fit_seconds" in runs else None, "ratio": verdict.get("ratio"),
                         "ratio_low": verdict.get("ratio_low"), "ratio_high": verdict.get("ratio_high"),
                         "verdict": verdict["verdict"], "why": verdict["why"],
                         "by_instructions": est["by_instructions"]})
    points = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    trials.to_csv(out / "trials.csv", index=False)
    cols = ["axis", "value", x, "seed", "learned", cfg.metric, task.seen_metric]
    (done[[c for c in cols if c in done]] if len(done) else pd.DataFrame(columns=cols)).to_csv(out / "runs.csv",
                                                                                               index=False)
    points.drop(columns=["by_instructions"], errors="ignore").to_csv(out / "points.csv", index=False)
    axes = _axes_verdicts(points, exp, params)
    minutes = float(done["fit_seconds"].sum() / 60) if len(done) and "fit_seconds" in done else 0.0
    metrics = {"trials": int(len(done)), "untrained": int((~done["learned"]).sum()) if len(done) else 0,
               "seeds": int(done["seed"].nunique()) if len(done) else 0, "training_minutes": round(minutes, 1),
               "settings": len(settings(exp, params)), "settings_measured": int((points["axis"] != "reference").sum())
               if len(points) else 0, "findings": [], "recipe": axes,
               "points": reports.json_safe(points.replace({np.nan: None}).to_dict("records"))}
    numeric = {k: metrics[k] for k in ("trials", "untrained", "seeds", "training_minutes", "settings_measured")}
    numeric.update({f"{r['axis']}={r['value']}": {"i50": r["i50"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                    for r in rows if r["axis"] != "reference"})
    reports.write(out, numeric, metrics)
    figure(exp, points, out / "figure.png", params)
    return metrics


def _axes_verdicts(points: pd.DataFrame, exp, params) -> list[dict]:
    """Per recipe axis: the values measured, whether I_50 moves with it, and along a numeric axis (the reference
    value included, in order) whether it keeps moving one way or settles (the last two values alike)."""
    out = []
    ref = points[points["axis"] == "reference"] if len(points) else points
    for axis in exp.recipe:
        mine = points[points["axis"] == axis] if len(points) else points
        moved = [r for r in mine.to_dict("records") if r["verdict"] == MOVES]
        text = ("not measured yet" if not len(mine) else
                f"moves at {', '.join(str(r['value']) for r in moved)}" if moved else
                "no move shown at " + ", ".join(str(v) for v in mine["value"]))
        section, _, key = axis.partition(".")
        line = [(getattr(getattr(params, section), key), r) for r in ref.to_dict("records")] + \
            [(r["value"], r) for r in mine.to_dict("records")]
        if len(line) >= 3 and all(isinstance(v, (int, float)) and r["i50"] is not None for v, r in line):
            line.sort(key=lambda item: item[0])
            steps = [b["i50"] / a["i50"] for (_, a), (_, b) in zip(line, line[1:])]
            if all(s < 1 for s in steps) or all(s > 1 for s in steps):
                a, b = line[-2][1], line[-1][1]
                def triple(r):
                    return tuple(math.nan if r.get(k) is None else r[k] for k in ("i50", "ci_low", "ci_high"))

                _, lo, hi = stats.ratio_interval(triple(a), triple(b), params.sweep.confidence,
                                                 df=((a.get("seeds") or 2) - 1, (b.get("seeds") or 2) - 1))
                settles = math.isfinite(lo) and lo <= 1 <= hi
                text += (f"; along {axis} I_50 {'falls' if steps[0] < 1 else 'rises'} at every step, "
                         + ("and the last two values are alike: it settles" if settles else
                            "and the last step still moves it: no sign of settling" if math.isfinite(lo) else
                            "(no interval at the last step)"))
        out.append({"axis": axis, "values": [v for v in exp.recipe[axis]], "measured": [v for v in mine["value"]]
                    if len(mine) else [], "verdict": MOVES if moved else UNCLEAR if len(mine) else "not measured",
                    "why": text})
    return out


def figure(exp, points: pd.DataFrame, path: Path, params=None) -> None:
    """One panel per recipe axis: I_50 with its interval against the axis's value (log scales), the reference
    recipe's I_50 as a band across every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_ = list(exp.recipe)
    fig, axs = plt.subplots(1, len(axes_), figsize=(3.2 * len(axes_) + 1.0, 3.8), dpi=120, squeeze=False,
                            sharey=True)
    ref = points[points["axis"] == "reference"] if len(points) else points
    for ax, axis in zip(axs[0], axes_):
        if len(ref):
            r = ref.iloc[0]
            ax.axhspan(r["ci_low"], r["ci_high"], color="0.85", label="reference recipe (params.yaml)")
            ax.axhline(r["i50"], color="0.4", lw=1)
        mine = points[points["axis"] == axis] if len(points) else points
        section, _, key = axis.partition(".")
        own = getattr(getattr(params, section), key) if params is not None else None
        values = ([own] if own is not None else []) + [v for v in exp.recipe[axis]]
        numeric = all(isinstance(v, (int, float)) for v in values)
        if numeric:
            values = sorted(values)
        position = {str(v): k for k, v in enumerate(values)}
        if len(ref) and own is not None:  # the reference recipe's own value on this axis
            r = ref.iloc[0]
            xv = float(own) if numeric else position[str(own)]
            ax.errorbar([xv], [r["i50"]], yerr=[[r["i50"] - r["ci_low"]], [r["ci_high"] - r["i50"]]], fmt="s",
                        color="0.3", capsize=3)
        for row in mine.to_dict("records"):
            xv = float(row["value"]) if numeric else position[str(row["value"])]
            i50, lo, hi = row["i50"], row["ci_low"], row["ci_high"]
            if i50 is None or not math.isfinite(i50):
                continue
            yerr = None if lo is None or not math.isfinite(lo) else [[i50 - lo], [hi - i50]]
            color = "tab:red" if row["verdict"] == MOVES else "tab:blue"
            ax.errorbar([xv], [i50], yerr=yerr, fmt="o", color=color, capsize=3)
            ax.annotate(f"{row['runs']} runs" + (f", {row['untrained']} untr." if row["untrained"] else ""),
                        (xv, i50), textcoords="offset points", xytext=(5, -10), fontsize=6)
        if numeric and min(values) > 0 and max(values) / min(values) >= 3:
            ax.set_xscale("log")
            ax.set_xlim(min(values) / 1.5, max(values) * 1.5)
        elif numeric:
            pad = 0.1 * (max(values) - min(values) or 1)
            ax.set_xlim(min(values) - pad, max(values) + pad)
        if numeric:
            ax.set_xticks([float(v) for v in values], [str(v) for v in values], fontsize=7)
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set_yscale("log")
        if params is not None:
            ax.set_ylim(min(params.sweep.instructions) / 1.2, max(params.sweep.instructions) * 1.2)
        ax.set_xlabel(axis)
        ax.set_title(axis, fontsize=9)
    axs[0][0].set_ylabel("I_50 (instructions, log), 90% interval")
    handles, labels = axs[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="upper right")
    fig.suptitle(f"{exp.title} (grey square: the reference recipe, the default study; red: I_50 moved from it)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path)
    plt.close(fig)
