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

import pandas as pd

from instdiv.config import Section
from instdiv.engine import stats
from instdiv.engine.sweep.study import at

from instdiv.engine.stats import (  # noqa: F401  (the verdict words and judges, for the reports)
    DIFFERS,
    REPRODUCED,
    UNTESTABLE,
    band_position,
    band_verdict,
    ratio_verdict,
)


class Finding(Section):
    section: ClassVar[str] = "findings"
    claim: str  # the paper's finding, in a line
    paper: str = ""  # the paper's numbers behind it
    metric: str | None = None  # null: the experiment's first metric
    higher: dict = {}  # axis values of the points that should score higher (e.g. {noop_share: 0.0})
    lower: dict = {}  # ... and of those they are compared with
    expect: Literal["higher", "similar"] = "higher"
    # The smallest difference that matters, declared from the paper's effect size (say how in a comment):
    # `similar` wants the whole interval within +- margin (wholly outside: differs); `higher` differs when the
    # interval's top is below it.
    margin: float
    same_as: str | None = None  # "<experiment>:<n>": the same runs as that finding, which is judged; this one cites it
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


seed_interval = stats.mean_interval


def _contrast(finding: Finding, runs: pd.DataFrame, metric: str, confidence: float) -> dict:
    """The finding's difference over seeds in `runs`: each seed's mean on the higher side minus its mean on the
    lower side, their mean and Student t interval, the smallest difference this spread could detect, and the
    verdict against the finding's margin."""
    high = runs[at(runs, finding.higher)].groupby("seed")[metric].mean()
    low = runs[at(runs, finding.lower)].groupby("seed")[metric].mean()
    seeds = sorted(set(high.index) & set(low.index))
    diffs = [high[s] - low[s] for s in seeds]
    mean, lo, hi = stats.mean_interval(diffs, confidence)
    verdict, opening = stats.contrast_verdict(mean, lo, hi, finding.margin, finding.expect)
    return {"seeds": len(seeds), "difference": mean, "ci_low": lo, "ci_high": hi,
            "detectable": stats.detectable(diffs, confidence), "verdict": verdict, "opening": opening,
            "higher_mean": float(high[seeds].mean()) if seeds else math.nan,
            "lower_mean": float(low[seeds].mean()) if seeds else math.nan}


def evaluate(finding: Finding, runs: pd.DataFrame, metric: str, confidence: float = 0.9) -> dict:
    """The finding against `runs` (every completed run, `learned` and `seed` columns): judged on the runs that
    learned their training rules, with the same contrast over all runs beside it (and said when the two
    disagree, so no finding rests silently on the runs it left out)."""
    learned = runs["learned"].astype(bool) if "learned" in runs else pd.Series(True, index=runs.index)
    gated, every = _contrast(finding, runs[learned], metric, confidence), _contrast(finding, runs, metric, confidence)
    sides = runs[at(runs, finding.higher) | at(runs, finding.lower)]
    untrained = int((~learned[sides.index]).sum())
    result = {"claim": finding.claim, "paper": finding.paper, "metric": metric, "margin": finding.margin,
              "expect": finding.expect, "confidence": confidence, "runs": int(len(sides)),
              "untrained_runs": untrained, **{k: v for k, v in gated.items() if k != "opening"},
              "all_runs": {k: every[k] for k in ("seeds", "difference", "ci_low", "ci_high", "verdict")}}
    if gated["seeds"] < 2 or not math.isfinite(gated["ci_low"]):
        result["verdict"] = UNTESTABLE
        result["why"] = (f"{gated['seeds']} seed(s) with trained runs on both sides ({untrained} of {len(sides)} "
                         "runs untrained)")
    else:
        result["why"] = gated["opening"] + (
            f"difference {gated['difference']:+.2f} ({confidence:.0%} interval {gated['ci_low']:+.2f} to "
            f"{gated['ci_high']:+.2f}) over {gated['seeds']} seeds; margin {finding.margin}, smallest detectable "
            f"{gated['detectable']:.2f}")
    if untrained and every["verdict"] != result["verdict"]:
        shown = (f"{every['difference']:+.2f} ({every['ci_low']:+.2f} to {every['ci_high']:+.2f})"
                 if math.isfinite(every["ci_low"]) else "no interval")
        result["why"] += (f"; with all {len(sides)} runs, the {untrained} untrained included: {every['verdict']}, "
                          f"{shown}: the verdict rests on the trained runs")
    if finding.note:
        result["why"] = f"{result['why']}; {finding.note}" if result["why"] else finding.note
    return result


def threshold_verdict(est: dict, paper_band: tuple[float, float], note: str = "") -> dict:
    """The threshold's interval against the paper's range: reproduced only inside it (stats.band_verdict)."""
    lo, hi = est.get("ci_low"), est.get("ci_high")
    lo, hi = (math.nan if v is None else v for v in (lo, hi))
    verdict = stats.band_verdict(lo, hi, paper_band)
    why = "" if not math.isfinite(lo) else f"our interval {lo:.0f}-{hi:.0f} is {stats.band_position(lo, hi, paper_band)}"
    return {"verdict": verdict, "why": f"{why}; {note}" if note and why else note or why}
