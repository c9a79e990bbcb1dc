"""How a sweep chooses its next point: grid mode pops enqueued points (`GridQueueSampler`); threshold mode
(`ThresholdSampler`) asks `propose` for each trial's I: both ends of the range first, then bisection of the
bracket where the metric crosses the target, then points around the crossing for the logistic fit
(instdiv/engine/estimate.py).
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState


def propose(measured: dict[int, float], pending: set[int], lo: int, hi: int, target: float,
            min_gap: float = 1.1) -> int | None:
    """The next I to train for locating where the metric crosses `target`, or None when nothing is left.

    `measured` maps I to its mean metric, `pending` holds I being trained. Ends of the range first, then
    the geometric middle of the bracket [largest I below target, smallest I at or above it], then points
    spreading out from the crossing at ratios 1.5, 1.5^2, ... that are not within `min_gap` of a taken one.
    """
    taken = set(measured) | pending
    for end in (hi, lo):
        if end not in taken:
            return end
    above = [i for i, v in measured.items() if v >= target]
    if not above:
        return None  # the crossing lies above the range: sweep.instructions must reach higher
    upper = min(above)
    below = [i for i in measured if i < upper]
    if not below:
        return None  # already at or above the target at the smallest I: lower the range
    center = math.sqrt(max(below) * upper)
    for k in range(0, 16):
        for sign in ((1,) if k == 0 else (1, -1)):
            c = int(round(center * 1.5 ** (sign * k / 2)))
            if lo <= c <= hi and all(max(c, t) / min(c, t) >= min_gap for t in taken):
                return c
    return None


def points_so_far(study: optuna.Study, metric: str, axis: str, exclude: int | None = None) -> tuple[dict, set]:
    """The mean metric per I over finished trials (a pruned one counts with its last validation score: it is a
    result, never proposed again), and the I of trials running or waiting."""
    values: dict[int, list[float]] = {}
    pending = set()
    for t in study.get_trials(deepcopy=False):
        i = t.params.get(axis)
        if i is None or t.number == exclude:
            continue
        if t.state == TrialState.COMPLETE and metric in t.user_attrs:
            values.setdefault(i, []).append(t.user_attrs[metric])
        elif t.state == TrialState.PRUNED and t.intermediate_values:  # its last validation score
            values.setdefault(i, []).append(t.intermediate_values[max(t.intermediate_values)])
        elif t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED):
            pending.add(i)
    return {i: sum(v) / len(v) for i, v in values.items()}, pending


class GridQueueSampler(optuna.samplers.BaseSampler):
    """Grid mode's sampler: every point is enqueued, so a trial that needs sampling found the queue empty
    (another worker took the last point between our check and our ask); it is pruned, never run."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise optuna.TrialPruned("every grid point is taken")


class ThresholdSampler(optuna.samplers.BaseSampler):
    """Chooses each trial's instruction count with `propose`; every other parameter has one value."""

    def __init__(self, lo: int, hi: int, target: float, metric: str, axis: str):
        self.lo, self.hi, self.target, self.metric, self.axis = lo, hi, target, metric, axis

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name == self.axis:
            measured, pending = points_so_far(study, self.metric, self.axis, exclude=trial.number)
            choice = propose(measured, pending, self.lo, self.hi, self.target)
            # Another worker took the last open point meanwhile: replicate at the current crossing.
            return choice if choice is not None else self.hi if not measured else \
                min(measured, key=lambda i: abs(measured[i] - self.target))
        return param_distribution.choices[0]


