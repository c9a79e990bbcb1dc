"""The threshold fit on synthetic accuracy curves whose crossing is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from instdiv.engine import estimate as est


def curve(i, plateau=1.0, steepness=4.0, midpoint=200.0):
    return plateau / (1 + np.exp(-steepness * (np.log(i) - math.log(midpoint))))


@pytest.mark.parametrize("midpoint", [60.0, 200.0, 700.0])
def test_fit_recovers_a_known_midpoint_and_the_interval_covers_it(midpoint):
    rng = np.random.default_rng(1)
    i = np.repeat(np.geomspace(16, 4096, 9), 2)
    acc = np.clip(curve(i, midpoint=midpoint) + rng.normal(0, 0.05, len(i)), 0, 1)
    result = est.estimate(i, acc, target=0.5, n_boot=300, confidence=0.9)
    assert result["threshold_instructions"] == pytest.approx(midpoint, rel=0.15)
    assert result["ci_low"] <= midpoint <= result["ci_high"]
    assert result["ci_high"] / result["ci_low"] < 3  # informative, not everything
    assert result["n_trials"] == len(i)


def test_crossing_of_a_curve_with_a_lower_plateau():
    i = np.geomspace(16, 4096, 12)
    acc = curve(i, plateau=0.6, midpoint=300)  # noiseless: A = 0.6, so 0.3 is crossed at the midpoint
    result = est.estimate(i, acc, target=0.3, n_boot=50)
    assert result["threshold_instructions"] == pytest.approx(300, rel=0.02)
    assert result["fit"]["plateau"] == pytest.approx(0.6, abs=0.01)
    # the target above the plateau: no crossing, said plainly rather than extrapolated
    none = est.estimate(i, acc, target=0.8, n_boot=50)
    assert math.isnan(none["threshold_instructions"])
    assert "not reached" in est.headline({**none, "metric": "unseen_op_accuracy"})


def test_headline_format():
    line = est.headline({"threshold_instructions": 181.4, "ci_low": 140.2, "ci_high": 230.9, "confidence": 0.9,
                         "n_trials": 7, "target": 0.5, "metric": "unseen_op_accuracy", "fit": {}})
    assert line == "threshold: 181 instructions (90% CI 140-231) from 7 training runs"


def test_the_estimate_stage_reads_a_code_sweep(in_tmp):
    """A threshold over code programs: trials.csv has n_programs and pass@1, no seen accuracy."""
    import json

    import pandas as pd

    from pathlib import Path

    from instdiv.params import params_from_dict

    programs = np.geomspace(10, 1000, 8).round().astype(int)
    pd.DataFrame({"state": "COMPLETE", "n_programs": programs, "seed": 0,
                  "pass_at_1": curve(programs, plateau=0.8, midpoint=100), "parse_rate": 1.0}).to_csv(
        in_tmp / "trials.csv", index=False)
    params = params_from_dict({"sweep": {"task": "code", "metric": "pass_at_1", "target": 0.4, "bootstrap": 50}})
    result = est.run(params, in_tmp / "trials.csv", Path("reports/sweep"), Path("reports/threshold.json"))
    assert result["threshold_instructions"] == pytest.approx(100, rel=0.05) and result["metric"] == "pass_at_1"
    assert json.loads(Path("reports/threshold.json").read_text())["metric"] == "pass_at_1"
    assert list(pd.read_csv("reports/sweep/points.csv").columns[:3]) == ["n_programs", "pass_at_1", "parse_rate"]
    assert Path("reports/sweep/phase_diagram.png").stat().st_size > 10_000
