"""Simulated studies: the threshold search and the estimate run on accuracy curves whose threshold is known,
to check what a study's interval promises (tests/test_estimate.py) and to compare search designs at equal
cost (benchmarks/threshold_search.py).

A simulated run at I with seed s scores the logistic curve of instdiv/engine/estimate.py whose midpoint is
shifted by a seed effect (shared by that seed's runs: its initial weights and its unseen rules) and by a run
effect (its own training rules), read through a binomial test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from instdiv.engine import estimate as est
from instdiv.engine.sweep.samplers import propose, relative_target


@dataclass
class Curves:
    threshold: float = 400.0  # the true threshold: the midpoint of the median seed's curve
    plateau: float = 0.97
    steepness: float = 5.0  # per unit of log I
    seed_sd: float = 0.15  # sd of a seed's midpoint shift, in log I
    run_sd: float = 0.10  # sd of a run's own shift, in log I
    test_rows: int = 2000

    def seeds(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.normal(0.0, self.seed_sd, n)

    def score(self, rng: np.random.Generator, i: float, seed_shift: float) -> float:
        midpoint = math.log(self.threshold) + seed_shift + rng.normal(0.0, self.run_sd)
        p = float(est.logistic(math.log(i), self.plateau, self.steepness, midpoint))
        return rng.binomial(self.test_rows, p) / self.test_rows


def threshold_study(curves: Curves, rng: np.random.Generator, lo: int, hi: int, seeds: int, max_trials: int,
                    fraction: float = 0.5) -> tuple[list, list, list]:
    """Threshold mode as the sampler runs it: each new I from `propose`, trained once per seed."""
    shifts = curves.seeds(rng, seeds)
    runs_i, runs_a, runs_s = [], [], []
    measured: dict[int, float] = {}
    while (len(measured) + 1) * seeds <= max_trials:
        i = propose(measured, set(), lo, hi, relative_target(measured, hi, fraction))
        if i is None:
            break
        scores = [curves.score(rng, i, shift) for shift in shifts]
        measured[i] = float(np.mean(scores))
        runs_i += [i] * seeds
        runs_a += scores
        runs_s += list(range(seeds))
    return runs_i, runs_a, runs_s


def grid_study(curves: Curves, rng: np.random.Generator, values: list[int], seeds: int) -> tuple[list, list, list]:
    """Grid mode: every I of `values` once per seed."""
    shifts = curves.seeds(rng, seeds)
    runs = [(i, curves.score(rng, i, shifts[s]), s) for i in values for s in range(seeds)]
    return [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]


def summary(curves: Curves, studies: list[tuple], fraction: float = 0.5, confidence: float = 0.9) -> dict:
    """Over many simulated studies: how often the interval covers the true threshold, how wide it is, how far
    the estimate lands (a factor, median and 90th percentile) and how often no threshold comes out."""
    covered, widths, errors, missing = 0, [], [], 0
    truth = curves.threshold
    for runs_i, runs_a, runs_s in studies:
        result = est.estimate(runs_i, runs_a, runs_s, fraction, confidence)
        t, lo, hi = result["threshold_instructions"], result["ci_low"], result["ci_high"]
        if not math.isfinite(t):
            missing += 1
            continue
        errors.append(max(t, truth) / min(t, truth))
        if math.isfinite(lo):
            covered += lo <= truth <= hi
            widths.append(hi / lo)
    n = len(studies)
    return {"studies": n, "coverage": covered / n, "no_threshold": missing / n,
            "median_interval_ratio": float(np.median(widths)) if widths else math.nan,
            "median_error_factor": float(np.median(errors)) if errors else math.nan,
            "p90_error_factor": float(np.quantile(errors, 0.9)) if errors else math.nan}
