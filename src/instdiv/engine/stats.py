"""The suite's statistics, as pure functions of numbers and tables: no file, no figure, no paper, no task.

Near a generalization threshold a run is a coin flip: it memorizes (unseen accuracy ~0) or generalizes
(unseen accuracy near what it scores on its own rules), and intermediate values are rare. So the threshold is
estimated from *outcomes*: each run is generalized or not (`outcomes`), the probability of generalizing is a
binomial GLM on log I (statsmodels), and I_50 is where that probability is one half. Runs of one seed share
their initial weights and part of their rules across I, so the interval resamples seeds, not runs (a cluster
bootstrap). `coverage` checks by simulation, on a bimodal per-run model with seed effects like the observed
one, that the interval covers the true I_50 as often as it claims.

The mean-accuracy curve (`logistic`, `fit_curve`, `crossing`) stays as the second, descriptive estimate, and
`mean_interval`/`contrast_verdict` judge a finding's difference over seeds against a margin the finding
declares.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

REPRODUCED, DIFFERS, UNTESTABLE = "reproduced", "differs", "not testable at this scale"


# ----------------------------------------------------------------------------------------------- outcomes

def outcomes(unseen, seen, cut: float = 0.5) -> np.ndarray:
    """Whether each run generalized: its unseen score reaches `cut` of its own score on the rules it trained
    on (the plateau that run can reach). Relative to the run, so a model that learned its rules to 0.9 and
    applies unseen ones at 0.85 counts as generalized just as one at 1.0 and 0.95 does."""
    unseen, seen = np.asarray(unseen, float), np.asarray(seen, float)
    return unseen >= cut * np.maximum(seen, 1e-9)


def _separated(x: np.ndarray, y: np.ndarray) -> bool:
    """Complete separation: every failure below every success (no maximum-likelihood fit exists)."""
    return bool(y.any() and (~y).any() and x[~y].max() < x[y].min())


def fit_i50(instructions, generalized) -> dict | None:
    """I_50 and the slope (per unit of log I) of P(generalized) = logistic(slope (log I - log I_50)), by a
    binomial GLM (statsmodels); None when every run has the same outcome (nothing to place I_50 between).

    Under complete separation (every failure at a smaller I than every success) the likelihood has no maximum:
    the slope is infinite and I_50 anywhere in the gap; the geometric middle of the gap is taken."""
    import statsmodels.api as sm

    x = np.log(np.asarray(instructions, float))
    y = np.asarray(generalized, bool)
    if len(y) == 0 or y.all() or not y.any() or len(np.unique(x)) < 2:
        return None  # nothing to place I_50 between (one outcome, or every run at one I)
    if _separated(x, y):
        return {"i50": float(math.exp((x[~y].max() + x[y].min()) / 2)), "slope": math.inf, "separated": True}
    center = float(np.mean(x))  # centred: the intercept and slope are nearly uncorrelated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quasi-separation warnings: the estimate below is checked instead
        try:
            res = sm.GLM(y.astype(float), sm.add_constant(x - center), family=sm.families.Binomial()).fit()
        except (ValueError, np.linalg.LinAlgError):
            return None
    b0, b1 = (float(v) for v in res.params)
    if not (math.isfinite(b0) and math.isfinite(b1)) or b1 <= 0:
        # more successes at small I than at large: no threshold in this range
        return {"i50": math.nan, "slope": b1, "separated": False}
    log_i50 = center - b0 / b1
    if abs(log_i50) > 50:  # a nearly flat fit puts it at no count a study could reach
        return {"i50": math.nan, "slope": b1, "separated": False}
    return {"i50": float(math.exp(log_i50)), "slope": b1, "separated": False}


def bootstrap_i50(instructions, generalized, clusters, confidence: float = 0.9, n_boot: int = 1000,
                  seed: int = 0) -> tuple[float, float, float]:
    """I_50 (the fit on all runs) and its interval: a bootstrap that resamples clusters (seeds) with
    replacement and refits gives the standard error of log I_50, and the interval is log I_50 +- Student t
    (clusters - 1 degrees of freedom) times it. (The plain percentile interval covered the true I_50 in 85-89%
    of simulated studies at 90%: with ~10 seeds the bootstrap spread is too narrow; this one in 91-93%; see
    `coverage`.) A resample with one outcome only places I_50 beyond the runs: half the smallest I (all
    generalized) or twice the largest (none did). Under complete separation the likelihood is flat over the
    gap between the last failure and the first success, so a separated resample draws its I_50 uniformly (in
    log I) from its gap. And when the fit is a step sharper than the ladder (from under a quarter to over three
    quarters between two measured I), the interval spans at least those two I, between which the share that
    generalized crosses one half (`_bracket`): the threshold lies between them, not where a fit puts it."""
    x = np.asarray(instructions, float)
    y = np.asarray(generalized, bool)
    c = np.asarray(clusters)
    point = fit_i50(x, y)
    if point is None or not math.isfinite(point["i50"]):
        return math.nan, math.nan, math.nan
    groups = [np.flatnonzero(c == k) for k in np.unique(c)]
    if len(groups) < 2:
        return point["i50"], math.nan, math.nan
    floor, ceiling = math.log(x.min() / 2), math.log(x.max() * 2)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))])
        xb, yb = x[idx], y[idx]
        f = fit_i50(xb, yb)
        if f is None:  # one outcome (beyond the runs), or both at a single I (there)
            draws[b] = floor if yb.all() else ceiling if not yb.any() else math.log(xb[0])
        elif f["separated"]:
            draws[b] = rng.uniform(math.log(xb[~yb].max()), math.log(xb[yb].min()))
        else:
            draws[b] = min(max(math.log(f["i50"]), floor), ceiling) if math.isfinite(f["i50"]) else ceiling
    half = sps.t.ppf(0.5 + confidence / 2, len(groups) - 1) * float(np.std(draws, ddof=1))
    center = math.log(point["i50"])
    lo, hi = math.exp(center - half), math.exp(center + half)
    bracket = _bracket(x, y, point["i50"])
    # A fit that rises from under a quarter to over three quarters within the bracket is a step the ladder
    # cannot resolve: the interval is never narrower than the bracket then.
    if bracket and point["slope"] * math.log(bracket[1] / bracket[0]) >= 2 * math.log(3):
        lo, hi = min(lo, bracket[0]), max(hi, bracket[1])
    return point["i50"], lo, hi


def _bracket(x: np.ndarray, y: np.ndarray, i50: float) -> tuple[float, float] | None:
    """The two measured I around I_50 between which the share of runs that generalized crosses one half (the
    crossing nearest I_50): with a step sharper than the ladder's spacing every I_50 between them fits as well,
    so an interval narrower than this bracket claims a resolution the design does not have."""
    values = np.unique(x)
    share = np.array([y[x == v].mean() for v in values])
    pairs = [(float(a), float(b)) for a, b, sa, sb in zip(values, values[1:], share, share[1:]) if sa < 0.5 <= sb]
    if not pairs:
        return None
    return min(pairs, key=lambda ab: abs(math.log(math.sqrt(ab[0] * ab[1]) / i50)))


def probability_curve(i50: float, slope: float, instructions) -> np.ndarray:
    """P(generalized) at each I under the fitted model (a step at I_50 when the slope is infinite)."""
    x = np.log(np.asarray(instructions, float)) - math.log(i50)
    if math.isinf(slope):
        return (x >= 0).astype(float)
    return 1.0 / (1.0 + np.exp(-slope * x))


def transition(i50: float, slope: float, ladder: Sequence[int], low: float = 0.1, high: float = 0.9) -> list[int]:
    """The ladder's values where the fitted probability of generalizing lies between `low` and `high`, with the
    nearest value on each side of I_50 always included (a sharp step still has a transition to sample)."""
    ladder = sorted(ladder)
    p = probability_curve(i50, slope, ladder)
    inside = {i for i, q in zip(ladder, p) if low <= q <= high}
    below = [i for i in ladder if i < i50]
    above = [i for i in ladder if i >= i50]
    inside |= set(below[-1:]) | set(above[:1])
    return sorted(inside)


# ------------------------------------------------------------------------------------- adaptive design

def ladder(lo: int, hi: int, ratio: float = math.sqrt(2)) -> list[int]:
    """Instruction counts from lo to hi, no two neighbours further apart than `ratio` (x sqrt 2 by default:
    32, 45, 64, 91, 128, ... 1024), both ends included."""
    # (1.4142 for sqrt 2 must not add a step: 32-1024 is ten steps of x sqrt 2)
    steps = max(1, math.ceil(math.log(hi / lo) / math.log(ratio) - 1e-3))
    return sorted({int(round(lo * (hi / lo) ** (k / steps))) for k in range(steps + 1)})


def next_instructions(runs: Sequence[tuple[int, bool | None]], values: Sequence[int]) -> int:
    """Where the next run informs I_50 most, given the runs so far ((I, generalized), None while training).

    The ends and the middle of the ladder first (once each: they show both sides exist); then, while every
    finished run has the same outcome, the middle of the unexplored side; then the fitted I_50's nearest
    ladder values inside the fitted transition (P(generalized) 0.1-0.9, at most two steps either side of
    I_50): the one with the fewest runs, so every I in the transition gathers runs evenly, where they inform
    both I_50 and the steepness."""
    values = sorted(values)
    count = {v: 0 for v in values}
    for i, _ in runs:
        count[i] = count.get(i, 0) + 1
    first = [values[len(values) // 2], values[0], values[-1]]
    for v in first:
        if count.get(v, 0) == 0:
            return v
    done = [(i, bool(g)) for i, g in runs if g is not None]
    xs = np.array([i for i, _ in done], float)
    ys = np.array([g for _, g in done], bool)
    if len(done) == 0 or ys.all() or not ys.any():
        # not bracketed yet: everything so far generalized (look lower) or nothing did (look higher)
        if len(done) and ys.all():
            side = [v for v in values if v < xs.min()] or values[:1]
            center = math.sqrt(side[0] * xs.min())
        else:
            side = [v for v in values if v > (xs.max() if len(done) else values[0])] or values[-1:]
            center = math.sqrt(side[-1] * (xs.max() if len(done) else values[0]))
    else:
        f = fit_i50(xs, ys)
        if f and math.isfinite(f["i50"]):
            # the transition as fitted so far (P between 0.1 and 0.9, and the values either side of I_50),
            # at most two ladder steps either side of I_50: its value with the fewest runs
            center = f["i50"]
            k = int(np.argmin([abs(math.log(v / center)) for v in values]))
            near = set(values[max(0, k - 2):k + 3])
            inside = [v for v in transition(center, f["slope"], values) if v in near]
            return min(inside, key=lambda v: (count.get(v, 0), abs(math.log(v / center))))
        center = math.sqrt(values[0] * values[-1])
    k = int(np.argmin([abs(math.log(v / center)) for v in values]))
    near = [values[j] for j in (k, k - 1, k + 1) if 0 <= j < len(values)]
    return min(near, key=lambda v: (count.get(v, 0), abs(math.log(v / center))))


def outcome_estimate(runs, x: str, metric: str, seen: str | None, cut: float, confidence: float,
                     values: list[int] | None = None, coverage_studies: int = 0, progress=None) -> dict:
    """I_50 from the runs' outcomes (engine/py): over the runs that learned their training rules, and
    over all runs beside it; the runs and outcomes at each I, the transition's I and how many runs each has,
    I_50 at other cuts (so the result can be seen not to hinge on the cut) and, given `coverage_studies`, the
    interval's coverage in that many simulated studies of the same design and size."""
    # a run without a seen score is judged against a plateau of 1.0 (an absolute cut), never against 0
    own = (runs[seen] if seen and seen in runs else pd.Series(1.0, index=runs.index)).fillna(1.0)
    # two workers that sampled at once may have trained the same (I, seed): one run, counted once
    runs = runs.drop_duplicates(subset=[x, "seed"] if "seed" in runs else [x], keep="first")
    own = own.loc[runs.index]
    runs = runs.assign(generalized=outcomes(runs[metric], own, cut))
    seeds = runs["seed"] if "seed" in runs else pd.Series(0, index=runs.index)
    runs = runs.assign(seed=seeds)
    learned = runs["learned"].astype(bool)

    def one(frame: pd.DataFrame) -> dict:
        fit_ = fit_i50(frame[x], frame["generalized"])
        i50, lo, hi = bootstrap_i50(frame[x], frame["generalized"], frame["seed"], confidence)
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
           "cut_sensitivity": {str(c): fit_i50(runs.loc[learned, x], outcomes(
               runs.loc[learned, metric], own[learned], c)) for c in (0.3, 0.7)}}
    out["cut_sensitivity"] = {c: (None if f is None else f["i50"]) for c, f in out["cut_sensitivity"].items()}
    token = f"{metric.removesuffix('accuracy')}token_accuracy"
    trained = runs[learned]
    out["sharpness"] = {"measure": f"the factor of {x} over which the mean at each {x} rises from 10% to 90% of "
                                   "its range", metric: rise_span(trained[x], trained[metric])}
    if token in runs:
        # compared on the same runs (those that scored both), at 3 values of I at least, or not at all
        both = trained[trained[token].notna()]
        values = sorted(int(v) for v in both[x].unique())
        out["sharpness"]["compared_at"] = values
        if len(values) >= 3:
            out["sharpness"].update({f"{metric} (same runs)": rise_span(both[x], both[metric]),
                                     token: rise_span(both[x], both[token])})
        else:
            out["sharpness"][token] = None
    i50, slope = gated["i50"], gated["slope"]
    if math.isfinite(i50) and slope is not None:
        ladder = values or sorted(int(v) for v in runs[x].unique())
        inside = transition(i50, slope, ladder)
        counts = dict(zip(table[x].astype(int), table["runs"]))
        out["transition"] = {str(i): int(counts.get(i, 0)) for i in inside}
        out["transition_min_runs"] = min(out["transition"].values())
        if math.isfinite(gated["ci_low"]) and gated["ci_low"] > 0:
            out["width_ratio"] = gated["ci_high"] / gated["ci_low"]
        if coverage_studies:
            out["coverage"] = coverage(coverage_studies, ladder, len(runs), i50,
                                             min(slope, 12.0) if math.isfinite(slope) else 12.0, seed_sd=0.25,
                                             confidence=confidence, n_boot=200, progress=progress)
    return out


# ---------------------------------------------------------------------------------------- simulation

def simulate_run(rng: np.random.Generator, i: float, i50: float, slope: float, seed_shift: float) -> tuple[float, float]:
    """One simulated run as the observed ones look: (unseen, seen) accuracy. It generalizes with probability
    logistic(slope (log I - log I_50 - seed_shift)); a generalizing run scores near its seen accuracy on
    unseen rules, a memorizing one near zero, with a few in between."""
    seen = float(np.clip(rng.normal(0.985, 0.01), 0, 1))
    p = 1.0 / (1.0 + math.exp(-slope * (math.log(i) - math.log(i50) - seed_shift)))
    if rng.random() < p:
        unseen = seen * float(rng.beta(12, 1.2))  # mostly 0.85-1.0 of seen
    else:
        unseen = float(rng.beta(0.6, 40)) if rng.random() > 0.1 else float(rng.uniform(0.05, 0.45))
    return unseen, seen


def simulate_study(rng: np.random.Generator, values: Sequence[int], budget: int, i50: float, slope: float,
                   seed_sd: float, cut: float = 0.5) -> dict:
    """A whole adaptive study (`next_instructions`, one run at a time, each I's runs taking seeds 0, 1, ...)
    on the simulated model; seeds share a random shift of their own I_50 (sd `seed_sd` in log I)."""
    shifts: dict[int, float] = {}
    xs, ys, seeds = [], [], []
    for _ in range(budget):
        i = next_instructions(list(zip(xs, ys)), values)
        s = xs.count(i)
        shifts.setdefault(s, float(rng.normal(0, seed_sd)))
        unseen, seen = simulate_run(rng, i, i50, slope, shifts[s])
        xs.append(i)
        ys.append(bool(outcomes([unseen], [seen], cut)[0]))
        seeds.append(s)
    return {"instructions": xs, "generalized": ys, "seeds": seeds}


def coverage(n_studies: int = 200, values: Sequence[int] | None = None, budget: int = 40, i50: float = 200.0,
             slope: float = 4.0, seed_sd: float = 0.25, confidence: float = 0.9, n_boot: int = 300,
             seed: int = 0, progress: Callable[[int], None] | None = None) -> dict:
    """The share of simulated studies whose interval covers the true I_50, and their median width (high/low)."""
    values = values or ladder(32, 1024)
    rng = np.random.default_rng(seed)
    covered, widths = 0, []
    for k in range(n_studies):
        sim = simulate_study(rng, values, budget, i50, slope, seed_sd)
        _, lo, hi = bootstrap_i50(sim["instructions"], sim["generalized"], sim["seeds"], confidence, n_boot,
                                  seed=k)
        covered += bool(lo <= i50 <= hi)  # NaN bounds (one seed) never cover
        widths.append(hi / lo if lo > 0 else math.inf)
        if progress:
            progress(k + 1)
    return {"coverage": covered / n_studies, "studies": n_studies, "median_width_ratio": float(np.median(widths)),
            "true_i50": i50, "slope": slope, "seed_sd": seed_sd, "budget": budget, "confidence": confidence}


# ------------------------------------------------------------------------ the mean curve (descriptive)

def logistic(x, plateau, steepness, midpoint):
    return plateau / (1.0 + np.exp(-steepness * (x - midpoint)))


def fit_curve(instructions, accuracy, plateau: float | None = None) -> tuple[float, float, float] | None:
    """(plateau, steepness, midpoint in log I) of the mean-accuracy curve by least squares (scipy), or None when
    it does not converge. Given `plateau`, only steepness and midpoint are fitted."""
    from scipy.optimize import OptimizeWarning, curve_fit

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
    """The I where a fitted curve reaches `fraction` of its plateau; NaN without a fit."""
    if popt is None:
        return math.nan
    _, steepness, midpoint = popt
    return float(math.exp(midpoint - math.log(1.0 / fraction - 1.0) / steepness))


def rise_span(instructions, values, low: float = 0.1, high: float = 0.9) -> float:
    """How sharp a curve is: the factor of I over which the mean of `values` at each I rises from `low` to
    `high` of its own range (min to max of those means), by linear interpolation on log I; NaN when it does
    not rise. A step is close to 1, a slow rise many times more."""
    frame = {}
    for i, v in zip(instructions, values):
        if v == v:
            frame.setdefault(float(i), []).append(float(v))
    xs = sorted(frame)
    if len(xs) < 2:
        return math.nan
    ys = np.array([np.mean(frame[x]) for x in xs])
    lo, hi = ys.min(), ys.max()
    if hi - lo <= 1e-9:
        return math.nan
    level = np.maximum.accumulate((ys - lo) / (hi - lo))  # the first crossing of each level
    logs = np.log(xs)
    a, b = (float(np.interp(q, level, logs)) for q in (low, high))
    return math.exp(b - a) if b > a else math.nan


# ------------------------------------------------------------------------------ differences over seeds

def mean_interval(values, confidence: float) -> tuple[float, float, float]:
    """Mean of per-seed values and its Student t interval (NaN bounds below two values)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan, math.nan
    half = sps.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def geometric_interval(values, confidence: float) -> tuple[float, float, float]:
    """Geometric mean of positive values and its Student t interval on their logarithms."""
    center, lo, hi = mean_interval(np.log([v for v in values if math.isfinite(v) and v > 0]), confidence)
    return tuple(float(np.exp(v)) for v in (center, lo, hi))


def detectable(values, confidence: float, power: float = 0.8) -> float:
    """The smallest true mean difference a paired t test over these per-seed values would find at `confidence`
    with probability `power` (their spread, their count); NaN below two values."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return math.nan
    df = len(v) - 1
    sd = v.std(ddof=1)
    return float((sps.t.ppf(0.5 + confidence / 2, df) + sps.t.ppf(power, df)) * sd / math.sqrt(len(v)))


def contrast_verdict(mean: float, lo: float, hi: float, margin: float, expect: str = "higher") -> tuple[str, str]:
    """A difference's verdict against the margin its finding declares, and the reason's opening words.

    higher: shown when the whole interval is above zero; differs when it rules out a gain of `margin` (its
    top below the margin); otherwise not testable. similar: shown when the whole interval lies within
    +-margin; differs when it lies wholly outside; otherwise not testable."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return UNTESTABLE, "fewer than two seeds on both sides"
    if expect == "higher":
        if lo > 0:
            return REPRODUCED, ""
        if hi < margin:
            return DIFFERS, "the opposite: lower, " if hi < 0 else f"no difference of {margin} or more: "
        return UNTESTABLE, "the seeds disagree, neither shown nor ruled out: "
    if -margin < lo and hi < margin:
        return REPRODUCED, ""
    if lo >= margin or hi <= -margin:
        return DIFFERS, f"beyond +-{margin}: "
    return UNTESTABLE, f"the interval straddles +-{margin}, neither similar nor different shown: "


def band_position(lo: float, hi: float, band: tuple[float, float]) -> str:
    """Where our interval [lo, hi] lies against a published band: inside it, containing it, overlapping it,
    below or above it."""
    a, b = band
    if hi < a:
        return "below"
    if lo > b:
        return "above"
    if a <= lo and hi <= b:
        return "inside"
    if lo <= a and b <= hi:
        return "containing"
    return "overlapping"


def band_verdict(lo: float, hi: float, band: tuple[float, float]) -> str:
    """Reproduced only when our whole interval lies inside the band; differs when it lies wholly outside;
    otherwise (overlapping, or wider than the band) not testable: overlap alone shows nothing."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return UNTESTABLE
    where = band_position(lo, hi, band)
    return REPRODUCED if where == "inside" else DIFFERS if where in ("below", "above") else UNTESTABLE


def chance_flips(n_verdicts: int, confidence: float) -> float:
    """How many of `n_verdicts` independent verdicts, each from a two-sided interval at `confidence`, would
    land on the wrong side by chance alone, in expectation."""
    return n_verdicts * (1 - confidence)


def paired_outcomes(a: dict, b: dict) -> dict:
    """Two arms' outcomes on the runs they share ((I, seed) -> generalized: the same rules' draw and initial
    weights): how many pairs, how many generalized in one arm only, and the exact McNemar p-value (a binomial
    test on the discordant pairs)."""
    shared = sorted(set(a) & set(b))
    a_only = sum(bool(a[k]) and not bool(b[k]) for k in shared)
    b_only = sum(bool(b[k]) and not bool(a[k]) for k in shared)
    n = a_only + b_only
    p = float(sps.binomtest(a_only, n, 0.5).pvalue) if n else 1.0
    return {"pairs": len(shared), "first_only": a_only, "second_only": b_only, "p_value": p}


def ratio_interval(first: tuple[float, float, float], second: tuple[float, float, float], confidence: float,
                   df: tuple[int | None, int | None] = (None, None)) -> tuple[float, float, float]:
    """second / first for two independent estimates each given as (point, low, high) at `confidence` on the
    log scale: each one's standard error is read back from its interval's half-width (by Student t with its
    `df`, as `bootstrap_i50` built it: seeds - 1; by the normal quantile where df is None), and the log
    ratio's is their root sum of squares, its interval Student t at the smaller df (conservative)."""
    def quantile(d):
        return sps.t.ppf(0.5 + confidence / 2, d) if d else sps.norm.ppf(0.5 + confidence / 2)

    values = [v for v in (*first, *second)]
    if any(v is None or not math.isfinite(v) or v <= 0 for v in values):
        return math.nan, math.nan, math.nan
    se = math.hypot(*((math.log(h) - math.log(lo)) / (2 * quantile(d))
                      for (_, lo, h), d in zip((first, second), df)))
    r = math.log(second[0]) - math.log(first[0])
    known = [d for d in df if d]
    q = quantile(min(known)) if len(known) == 2 else quantile(None)
    return math.exp(r), math.exp(r - q * se), math.exp(r + q * se)


def ratio_verdict(lo: float, hi: float, factor: float) -> str:
    """Two thresholds alike (reproduced) when the ratio's whole interval lies within [1/factor, factor];
    different when it lies wholly outside; otherwise not testable."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return UNTESTABLE
    if 1 / factor < lo and hi < factor:
        return REPRODUCED
    if lo >= factor or hi <= 1 / factor:
        return DIFFERS
    return UNTESTABLE
