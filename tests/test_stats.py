"""The statistics on synthetic data whose truth is known: I_50 from bimodal outcomes, an interval whose coverage
is checked by simulation, the adaptive design, and verdicts that flip when their interval crosses the margin."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from instdiv.engine import stats

LADDER = [32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024]


def test_the_ladder_is_x_sqrt2_apart_and_keeps_the_powers_of_two():
    assert stats.ladder(32, 1024) == LADDER
    assert stats.ladder(32, 1024, 1.4142) == LADDER  # as params.yaml writes sqrt 2
    values = stats.ladder(10, 5000, 1.3)
    assert values[0] == 10 and values[-1] == 5000
    assert max(b / a for a, b in zip(values, values[1:])) <= 1.3 + 0.01


def test_outcomes_are_relative_to_the_runs_own_seen_score():
    got = stats.outcomes([0.9, 0.44, 0.46, 0.0, 0.3], [1.0, 0.9, 0.9, 0.0, 0.5], cut=0.5)
    assert got.tolist() == [True, False, True, False, True]


def test_the_glm_recovers_a_known_i50_from_bimodal_runs():
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for i in LADDER:
        for _ in range(40):
            unseen, seen = stats.simulate_run(rng, i, 200.0, 4.0, 0.0)
            xs.append(i)
            ys.append(bool(stats.outcomes([unseen], [seen])[0]))
    fit = stats.fit_i50(xs, ys)
    assert fit["i50"] == pytest.approx(200, rel=0.1) and fit["slope"] == pytest.approx(4.0, rel=0.3)
    assert not fit["separated"]
    i50, lo, hi = stats.bootstrap_i50(xs, ys, [k % 40 for k in range(len(xs))], n_boot=300)
    assert lo < 200 < hi and hi / lo < 1.4


def test_one_outcome_everywhere_has_no_i50_and_separation_takes_the_gap():
    assert stats.fit_i50([64, 128, 256], [False, False, False]) is None
    assert stats.fit_i50([64, 128, 256], [True, True, True]) is None
    gap = stats.fit_i50([64, 64, 128, 256, 512], [False, False, False, True, True])
    assert gap["separated"] and gap["i50"] == pytest.approx(math.sqrt(128 * 256)) and math.isinf(gap["slope"])
    assert math.isnan(stats.bootstrap_i50([128, 256], [False, True], [0, 0])[1])  # one seed: no interval


def test_a_step_sharper_than_the_ladder_gets_the_whole_bracket_as_its_interval():
    """Every seed fails at 181 and generalizes at 256: any I_50 between fits as well, so the interval spans the
    bracket instead of collapsing on its middle."""
    x, y = [181] * 5 + [256] * 5 + [32, 1024], [False] * 5 + [True] * 5 + [False, True]
    i50, lo, hi = stats.bootstrap_i50(x, y, list(range(5)) * 2 + [0, 0], n_boot=200)
    assert lo <= 181 and hi >= 256 and lo < i50 < hi
    assert stats.band_verdict(lo, hi, (200, 230)) == stats.UNTESTABLE


def test_the_design_opens_with_both_ends_then_gathers_runs_in_the_transition():
    assert stats.next_instructions([], LADDER) == 181
    assert stats.next_instructions([(181, None)], LADDER) == 32
    assert stats.next_instructions([(181, None), (32, None)], LADDER) == 1024
    # nothing generalized yet: look higher; everything did: look lower
    assert stats.next_instructions([(181, False), (32, False), (1024, False)], LADDER) > 181
    assert stats.next_instructions([(181, True), (32, True), (1024, True)], LADDER) < 32 * 1.5
    sim = stats.simulate_study(np.random.default_rng(1), LADDER, 40, 250.0, 4.0, 0.25)
    counts = collections.Counter(sim["instructions"])
    near = sum(n for i, n in counts.items() if 250 / 2.1 <= i <= 250 * 2.1)
    assert near >= 32  # 40 runs, most of them within a factor 2 of the true I_50
    # every run at an I takes the next seed: 0, 1, 2, ...
    by_i = collections.defaultdict(list)
    for i, s in zip(sim["instructions"], sim["seeds"]):
        by_i[i].append(s)
    assert all(seeds == list(range(len(seeds))) for seeds in by_i.values())


def test_the_interval_covers_the_true_i50_in_a_small_simulation():
    """Deterministic (seeded): 40 simulated studies of 40 runs; the full check is the slow test below."""
    result = stats.coverage(n_studies=40, budget=40, n_boot=150, i50=200.0, slope=4.0, seed_sd=0.25, seed=1)
    assert result["coverage"] >= 0.8 and result["median_width_ratio"] < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("slope, seed_sd", [(4.0, 0.25), (8.0, 0.25), (12.0, 0.1)])
def test_the_interval_covers_the_true_i50_in_200_simulated_studies(slope, seed_sd):
    """Studies like the observed one (runs at 181 memorize, at 256 generalize, seeds disagree near the step)."""
    result = stats.coverage(n_studies=200, budget=40, n_boot=200, i50=200.0, slope=slope, seed_sd=seed_sd)
    assert result["coverage"] >= 0.85


@pytest.mark.slow
def test_a_flat_curve_with_far_apart_seeds_is_covered_less_often_than_claimed():
    """A stress case beyond the observed: a flatter curve (slope 3) and seeds' own thresholds twice as far apart
    (sd 0.4 in log I): the interval covers the truth in 81% of 200 studies, under its nominal 90% (docs say so);
    this test keeps it from getting worse unnoticed."""
    result = stats.coverage(n_studies=200, budget=40, n_boot=200, i50=200.0, slope=3.0, seed_sd=0.4)
    assert result["coverage"] >= 0.78


@pytest.mark.parametrize("interval, margin, expect, verdict", [
    ((0.20, 0.05, 0.35), 0.1, "higher", stats.REPRODUCED),   # wholly above zero
    ((0.02, -0.03, 0.07), 0.1, "higher", stats.DIFFERS),     # rules out a gain of the margin
    ((0.02, -0.03, 0.12), 0.1, "higher", stats.UNTESTABLE),  # ... until its top crosses the margin
    ((0.00, -0.04, 0.04), 0.05, "similar", stats.REPRODUCED),
    ((0.00, -0.04, 0.06), 0.05, "similar", stats.UNTESTABLE),  # straddles the margin
    ((0.10, 0.06, 0.14), 0.05, "similar", stats.DIFFERS),
    ((0.10, math.nan, math.nan), 0.05, "higher", stats.UNTESTABLE),
])
def test_a_verdict_flips_when_its_interval_crosses_the_margin(interval, margin, expect, verdict):
    assert stats.contrast_verdict(*interval, margin, expect)[0] == verdict


def test_the_threshold_is_reproduced_only_inside_the_papers_band():
    band = (300, 500)
    assert stats.band_position(320, 460, band) == "inside" and stats.band_verdict(320, 460, band) == stats.REPRODUCED
    assert stats.band_position(163, 395, band) == "overlapping"
    assert stats.band_verdict(163, 395, band) == stats.UNTESTABLE  # overlap alone shows nothing
    assert stats.band_position(100, 900, band) == "containing" and stats.band_verdict(100, 900, band) == stats.UNTESTABLE
    assert stats.band_position(100, 250, band) == "below" and stats.band_verdict(100, 250, band) == stats.DIFFERS
    assert stats.band_position(600, 900, band) == "above"


def test_two_thresholds_compared_by_their_ratio_and_paired_runs():
    ratio, lo, hi = stats.ratio_interval((200, 160, 250), (210, 170, 260), 0.9)
    assert ratio == pytest.approx(1.05) and lo < 1 < hi
    assert stats.ratio_verdict(lo, hi, 1.5) == stats.REPRODUCED
    assert stats.ratio_verdict(*stats.ratio_interval((100, 90, 111), (300, 270, 333), 0.9)[1:], 1.5) == stats.DIFFERS
    paired = stats.paired_outcomes({(128, 0): False, (128, 1): False, (256, 0): True, (512, 0): True},
                                   {(128, 0): True, (128, 1): True, (256, 0): True, (64, 0): False})
    assert paired == {"pairs": 3, "first_only": 0, "second_only": 2, "p_value": pytest.approx(0.5)}


def test_the_detectable_effect_shrinks_with_seeds_and_grows_with_spread():
    few = stats.detectable([0.1, -0.05, 0.2], 0.9)
    many = stats.detectable([0.1, -0.05, 0.2] * 4, 0.9)
    wide = stats.detectable([0.3, -0.25, 0.4], 0.9)
    assert many < few < wide and math.isnan(stats.detectable([0.1], 0.9))
    assert stats.chance_flips(20, 0.9) == pytest.approx(2.0)


def test_a_step_rises_over_a_smaller_span_of_i_than_a_slope():
    step = stats.rise_span([64, 128, 256, 512, 1024], [0.0, 0.0, 0.5, 1.0, 1.0])
    slope = stats.rise_span([64, 128, 256, 512, 1024], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert step == pytest.approx(3.03, rel=0.01) and slope > 2.5 * step
    assert math.isnan(stats.rise_span([64, 128], [0.3, 0.3]))
