"""Findings: a paper's claim, our measurement with its interval over seeds, and a verdict said plainly.

An experiment declares its findings (experiments/<name>.yaml, `findings`) as contrasts between two sets of
its points: `higher` should score above `lower` on `metric` (or, with `expect: similar`, within `margin`
of it). An interval too wide to show the claim or rule it out is "not testable", never "differs". Runs are paired by seed: each seed gives the mean difference over the points of each side it
trained, and the interval is a Student t interval over those per-seed differences. Untrained runs (see
Task.learned) never enter; with fewer than two seeds left the finding is not testable at this scale.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from scipy import stats

from instdiv.config import Section
from instdiv.engine.sweep.study import at

REPRODUCED, DIFFERS, UNTESTABLE = "reproduced", "differs", "not testable at this scale"


class Finding(Section):
    section: ClassVar[str] = "findings"
    claim: str  # the paper's finding, in a line
    paper: str = ""  # the paper's numbers behind it
    metric: str | None = None  # null: the experiment's first metric
    higher: dict = {}  # axis values of the points that should score higher (e.g. {noop_share: 0.0})
    lower: dict = {}  # ... and of those they are compared with
    expect: Literal["higher", "similar"] = "higher"
    margin: float = 0.1  # the smallest difference that matters: `similar` wants the whole interval within
    # +- margin (wholly outside: differs); `higher` differs when the interval's top is below it
    note: str = ""  # what differs from the paper's setting, shown as part of "why"


def judge_runs(task, runs: pd.DataFrame, bar: float) -> pd.Series:
    """Whether each run learned its training instructions, judged now from its recorded scores (so changing
    evaluate.learned_at re-judges finished studies); without those scores, as recorded (`learned`), else
    learned."""
    recorded = runs["learned"] if "learned" in runs else pd.Series(True, index=runs.index)
    out = []
    for row, was in zip(runs.to_dict("records"), recorded):
        now = task.learned(row, bar)
        out.append(bool(now) if now is not None else (bool(was) if was == was else True))  # NaN: unrecorded
    return pd.Series(out, index=runs.index, dtype=bool)


def seed_interval(values, confidence: float) -> tuple[float, float, float]:
    """Mean of per-seed values and its Student t interval (NaN bounds below two seeds)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def evaluate(finding: Finding, runs: pd.DataFrame, metric: str, confidence: float = 0.9) -> dict:
    """The finding against `runs` (every completed run, `learned` and `seed` columns)."""
    trained = runs[runs["learned"].astype(bool)] if "learned" in runs else runs
    high = trained[at(trained, finding.higher)].groupby("seed")[metric].mean()
    low = trained[at(trained, finding.lower)].groupby("seed")[metric].mean()
    seeds = sorted(set(high.index) & set(low.index))
    diffs = [high[s] - low[s] for s in seeds]
    mean, lo, hi = seed_interval(diffs, confidence)
    sides = runs[at(runs, finding.higher) | at(runs, finding.lower)]
    untrained = int((~sides["learned"].astype(bool)).sum()) if "learned" in sides else 0
    result = {"claim": finding.claim, "paper": finding.paper, "metric": metric, "seeds": len(seeds),
              "difference": mean, "ci_low": lo, "ci_high": hi, "confidence": confidence,
              "runs": int(len(sides)), "untrained_runs": untrained,
              "higher_mean": float(high[seeds].mean()) if seeds else math.nan,
              "lower_mean": float(low[seeds].mean()) if seeds else math.nan}
    if len(seeds) < 2 or not math.isfinite(lo):
        result["verdict"] = UNTESTABLE
        result["why"] = (f"{len(seeds)} seed(s) with trained runs on both sides ({untrained} of {len(sides)} runs "
                         "untrained)")
    elif finding.expect == "higher":
        # Shown when the interval lies above zero; contradicted when it rules out a gain of `margin` or more
        # (no difference, or the opposite); otherwise the seeds disagree too much to tell, which is not
        # evidence against the paper (3 seeds of +0.9, +0.9 and -0.2 say neither).
        shown, ruled_out = lo > 0, hi < finding.margin
        result["verdict"] = REPRODUCED if shown else DIFFERS if ruled_out else UNTESTABLE
        result["why"] = ("" if shown else "the opposite: lower, " if hi < 0 else
                         f"no difference of {finding.margin} or more: " if ruled_out else
                         "the seeds disagree, neither shown nor ruled out: ") + \
            f"difference {mean:+.2f} ({confidence:.0%} interval {lo:+.2f} to {hi:+.2f}) over {len(seeds)} seeds"
    else:
        # An equivalence test: similar when the whole interval lies within +-margin, different when it lies
        # wholly outside, and neither shown when it straddles the margin (too few seeds for this spread).
        similar = -finding.margin < lo and hi < finding.margin
        apart = lo >= finding.margin or hi <= -finding.margin
        result["verdict"] = REPRODUCED if similar else DIFFERS if apart else UNTESTABLE
        result["why"] = ("" if similar else f"beyond +-{finding.margin}: " if apart else
                         f"the interval straddles +-{finding.margin}, neither similar nor different shown: ") + \
            f"difference {mean:+.2f} ({confidence:.0%} interval {lo:+.2f} to {hi:+.2f}) over {len(seeds)} seeds"
    if finding.note:
        result["why"] = f"{result['why']}; {finding.note}" if result["why"] else finding.note
    return result


def threshold_verdict(est: dict, paper_band: tuple[float, float], note: str = "") -> dict:
    """The threshold's interval against the paper's range: reproduced when they overlap."""
    t, lo, hi = est.get("threshold_instructions"), est.get("ci_low"), est.get("ci_high")
    ok = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    if not ok(t) or not ok(lo):
        verdict, why = UNTESTABLE, f"{est.get('seeds_located', 0)} seed(s) located a threshold"
    elif hi < paper_band[0] or lo > paper_band[1]:
        side = "below" if hi < paper_band[0] else "above"
        verdict, why = DIFFERS, f"the interval {lo:.0f}-{hi:.0f} lies {side} the paper's {paper_band[0]}-{paper_band[1]}"
    else:
        verdict, why = REPRODUCED, ""
    if note:
        why = f"{why}; {note}" if why else note
    return {"verdict": verdict, "why": why}
