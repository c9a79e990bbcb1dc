"""The threshold estimate on synthetic accuracy curves whose threshold is known: one fit per seed, an interval
from the seeds that covers the truth as often as it claims, untrained runs left out and counted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instdiv.engine import estimate as est
from instdiv.engine.sweep import simulate as sim
from instdiv.params import params_from_dict


def curve(i, plateau=1.0, steepness=4.0, midpoint=200.0):
    return plateau / (1 + np.exp(-steepness * (np.log(i) - math.log(midpoint))))


def seeded_runs(midpoints, values=(32, 64, 128, 256, 512, 1024, 2048), plateau=0.95):
    """Noiseless runs, one curve per seed (its own midpoint)."""
    i = [v for _ in midpoints for v in values]
    a = [float(curve(v, plateau=plateau, midpoint=m)) for m in midpoints for v in values]
    s = [k for k, _ in enumerate(midpoints) for _ in values]
    return i, a, s


def test_one_fit_per_seed_and_a_t_interval_over_them():
    result = est.estimate(*seeded_runs([150.0, 200.0, 260.0]), fraction=0.5, confidence=0.9)
    assert result["per_seed"] == {"0": pytest.approx(150, rel=0.01), "1": pytest.approx(200, rel=0.01),
                                  "2": pytest.approx(260, rel=0.01)}
    logs = np.log([150, 200, 260])
    assert result["threshold_instructions"] == pytest.approx(math.exp(logs.mean()), rel=0.01)  # geometric mean
    half = 2.919986 * logs.std(ddof=1) / math.sqrt(3)  # t(0.95, 2 df)
    assert result["ci_low"] == pytest.approx(math.exp(logs.mean() - half), rel=0.01)
    assert result["ci_high"] == pytest.approx(math.exp(logs.mean() + half), rel=0.01)
    assert (result["seeds"], result["seeds_located"], result["runs_fitted"]) == (3, 3, 21)
    assert result["fit"]["plateau"] == pytest.approx(0.95, abs=0.02)


def test_the_target_is_a_fraction_of_the_plateau():
    i, a, s = seeded_runs([300.0, 300.0], plateau=0.6)
    half = est.estimate(i, a, s, fraction=0.5)
    assert half["threshold_instructions"] == pytest.approx(300, rel=0.01)  # half of 0.6 at the midpoint
    assert half["target_accuracy"] == pytest.approx(0.3, abs=0.005)
    # 80% of the plateau: log I = m + log(4) / k
    assert est.estimate(i, a, s, fraction=0.8)["threshold_instructions"] == pytest.approx(
        300 * math.exp(math.log(4) / 4), rel=0.01)


def test_one_seed_gives_no_interval_and_a_curve_outside_the_range_no_threshold():
    one = est.estimate(*seeded_runs([200.0]))
    assert one["threshold_instructions"] == pytest.approx(200, rel=0.01) and math.isnan(one["ci_low"])
    assert "undetermined" in est.headline({**one, "runs": 7, "untrained_runs": 0})
    far = est.estimate(*seeded_runs([50_000.0, 60_000.0]))  # never rises within 32-2048: not extrapolated
    assert math.isnan(far["threshold_instructions"]) and far["seeds_located"] == 0
    assert "not located" in est.headline({**far, "runs": 14, "untrained_runs": 0})


def test_the_seed_interval_covers_the_true_threshold_in_simulated_studies():
    """200 threshold searches as the sampler runs them (4 values of I x 3 seeds in 64-1024), with seed and run
    noise as large as measured between seeds: the 90% interval must cover the truth in at least 80%."""
    rng = np.random.default_rng(12)
    curves = sim.Curves(threshold=300.0)
    studies = [sim.threshold_study(curves, rng, 64, 1024, seeds=3, max_trials=12) for _ in range(200)]
    result = sim.summary(curves, studies)
    assert result["coverage"] >= 0.8, result
    assert result["no_threshold"] <= 0.02 and result["median_error_factor"] < 1.2, result


def test_headline_format():
    line = est.headline({"threshold_instructions": 181.4, "ci_low": 140.2, "ci_high": 230.9, "confidence": 0.9,
                         "seeds": 3, "seeds_located": 3, "runs": 12, "untrained_runs": 1})
    assert line == ("threshold: 181 instructions (90% interval over seeds 140-231); 3 seeds, 12 training runs, "
                    "1 of them untrained and left out")


def test_the_estimate_stage_leaves_untrained_runs_out_and_counts_them(in_tmp):
    i, a, s = seeded_runs([150.0, 200.0, 260.0])
    frame = pd.DataFrame({"state": "COMPLETE", "n_instructions": i, "seed": s, "unseen_op_accuracy": a,
                          "seen_op_accuracy": 0.99, "learned": True, "unseen_patterns_in_train": 0.02})
    # an untrained run (seen 0.4) whose unseen score would drag its seed's curve down
    frame.loc[len(frame)] = {"state": "COMPLETE", "n_instructions": 1024, "seed": 0, "unseen_op_accuracy": 0.0,
                             "seen_op_accuracy": 0.4, "learned": False, "unseen_patterns_in_train": 0.05}
    frame.to_csv(in_tmp / "trials.csv", index=False)
    params = params_from_dict({"sweep": {"target": 0.5}})
    result = est.run(params, in_tmp / "trials.csv", Path("reports/sweep"), Path("reports/threshold.json"))
    assert result["per_seed"]["0"] == pytest.approx(150, rel=0.01)  # as if the untrained run did not exist
    written = json.loads(Path("reports/threshold.json").read_text())
    assert (written["runs"], written["untrained_runs"], written["seeds"]) == (22, 1, 3)
    assert written["mean_unseen_patterns_in_train"] == pytest.approx(0.02)
    points = pd.read_csv("reports/sweep/points.csv")
    assert list(points.columns[:3]) == ["n_instructions", "seed", "learned"] and (~points["learned"]).sum() == 1
    assert Path("reports/sweep/phase_diagram.png").stat().st_size > 10_000


def test_too_few_trained_runs_is_one_line_naming_the_fix(in_tmp):
    from instdiv.errors import DataError

    pd.DataFrame({"state": "COMPLETE", "n_instructions": [64, 256, 1024], "seed": 0, "unseen_op_accuracy": 0.1,
                  "learned": [True, False, True]}).to_csv(in_tmp / "trials.csv", index=False)
    with pytest.raises(DataError, match=r"2 trained runs at 2 values .*1 more did not learn.*train.max_steps"):
        est.run(params_from_dict({}), in_tmp / "trials.csv", Path("r"), Path("r/t.json"))


def test_the_estimate_stage_reads_a_code_sweep(in_tmp):
    """A threshold over code programs: trials.csv has n_programs and pass@1, no seen accuracy."""
    programs = np.geomspace(10, 1000, 8).round().astype(int)
    frame = pd.concat([pd.DataFrame({"state": "COMPLETE", "n_programs": programs, "seed": seed, "parse_rate": 1.0,
                                     "pass_at_1": curve(programs, plateau=0.8, midpoint=m)})
                       for seed, m in enumerate([90, 100, 110])])
    frame.to_csv(in_tmp / "trials.csv", index=False)
    params = params_from_dict({"sweep": {"task": "code", "metric": "pass_at_1", "target": 0.5}})
    result = est.run(params, in_tmp / "trials.csv", Path("reports/sweep"), Path("reports/threshold.json"))
    assert result["threshold_instructions"] == pytest.approx(100, rel=0.05) and result["metric"] == "pass_at_1"
    assert result["ci_low"] < 100 < result["ci_high"]
    assert json.loads(Path("reports/threshold.json").read_text())["metric"] == "pass_at_1"
    assert list(pd.read_csv("reports/sweep/points.csv").columns[:4]) == ["n_programs", "seed", "learned",
                                                                          "pass_at_1"]
