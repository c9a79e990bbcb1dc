"""How a sweep chooses its next point: grid mode pops enqueued points (`GridQueueSampler`); threshold mode
(`ThresholdSampler`) asks `propose` for each new I: both ends of the range first, then bisection of the
bracket where the metric crosses the target, then points around the crossing for the logistic fits
(instdiv/engine/estimate.py). Every I is trained once per seed of sweep.seeds: the trial that opens a point
enqueues the other seeds, which Optuna hands to one worker each.

The target is relative: `sweep.target` times the plateau, the mean score at the top of the range (measured
first), so a half-way target means the same whatever level the models converge to.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from instdiv.engine.stats import next_instructions, outcomes


def propose(measured: dict[int, float], pending: set[int], lo: int, hi: int, target: float | None,
            min_gap: float = 1.1) -> int | None:
    """The next I to train for locating where the metric crosses `target`, or None when nothing is left (or,
    with `target` None, nothing before the plateau is known).

    `measured` maps I to its mean metric, `pending` holds I being trained. Ends of the range first, then
    the geometric middle of the bracket [largest I below target, smallest I at or above it], then points
    spreading out from the crossing at ratios 1.5, 1.5^2, ... that are not within `min_gap` of a taken one.
    """
    taken = set(measured) | pending
    for end in (hi, lo):
        if end not in taken:
            return end
    if target is None:
        return None
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


# Below this at the top of the range there is no plateau to take a fraction of: the search stops and says so.
MIN_PLATEAU = 0.05


def relative_target(measured: dict[int, float], hi: int, fraction: float) -> float | None:
    """The absolute target: `fraction` of the plateau, the mean at the top of the range; None until measured,
    or when the top of the range has not generalized at all."""
    return fraction * measured[hi] if measured.get(hi, 0.0) >= MIN_PLATEAU else None


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
    """Chooses the I of each trial that opens a point with `propose`, and enqueues that I for the other seeds;
    every other parameter has one value (a trial popped from the queue is never sampled)."""

    def __init__(self, lo: int, hi: int, fraction: float, metric: str, axis: str, seeds: list[int],
                 fixed: dict):
        self.lo, self.hi, self.fraction, self.metric, self.axis = lo, hi, fraction, metric, axis
        self.seeds, self.fixed = seeds, fixed

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name != self.axis:
            return param_distribution.choices[0]  # seeds[0] opens a point; one value for every other axis
        measured, pending = points_so_far(study, self.metric, self.axis, exclude=trial.number)
        choice = propose(measured, pending, self.lo, self.hi, relative_target(measured, self.hi, self.fraction))
        if choice is None:  # another worker took the last open point between our check and our ask
            raise optuna.TrialPruned("no point left to open")
        for seed in self.seeds[1:]:
            study.enqueue_trial({self.axis: choice, **self.fixed, "seed": seed})
        return choice


def planned(t) -> dict:
    """A trial's parameters, or for one still waiting in the queue (a retry) those it will take."""
    return t.params or t.system_attrs.get("fixed_params", {})


def outcome_runs(study: optuna.Study, axis: str, metric: str, seen: str | None, cut: float,
                 exclude: int | None = None) -> list[tuple[int, bool | None]]:
    """(I, generalized) of every run so far, None for those still training or waiting; failed ones left out
    (their retry stands in for them)."""
    runs = []
    for t in study.get_trials(deepcopy=False):
        i = planned(t).get(axis)
        if i is None or t.number == exclude or t.state == TrialState.FAIL:
            continue
        if t.state == TrialState.COMPLETE and metric in t.user_attrs:
            own = t.user_attrs.get(seen, 1.0) if seen else 1.0
            runs.append((i, bool(outcomes([t.user_attrs[metric]], [own], cut)[0])))
        else:
            runs.append((i, None))
    return runs


class OutcomeSampler(optuna.samplers.BaseSampler):
    """Outcomes mode: each new run's I is where it informs I_50 most (`stats.next_instructions` on the outcomes
    so far), and its seed the smallest one not yet used at that I, so the runs at an I are seeds 0, 1, 2, ...
    (a retried trial keeps its own)."""

    def __init__(self, values: list[int], cut: float, metric: str, seen: str | None, axis: str):
        self.values, self.cut, self.metric, self.seen, self.axis = values, cut, metric, seen, axis

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name == self.axis:
            runs = outcome_runs(study, self.axis, self.metric, self.seen, self.cut, exclude=trial.number)
            return next_instructions(runs, self.values)
        if param_name == "seed":
            i = trial.params[self.axis]
            used = {planned(t).get("seed") for t in study.get_trials(deepcopy=False)
                    if planned(t).get(self.axis) == i and t.state != TrialState.FAIL and t.number != trial.number}
            return next(s for s in range(len(used) + 1) if s not in used)
        return param_distribution.choices[0]  # one value for every other axis
