"""Named experiments: declaration checks, a tiny end-to-end run per kind of axis, the report and index."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from instdiv import experiments, rewrite
from instdiv.errors import ConfigError

from conftest import write_params


def declare(root, name, **fields):
    (root / "experiments").mkdir(exist_ok=True)
    (root / "experiments" / f"{name}.yaml").write_text(yaml.safe_dump(fields))


def test_effective_instructions():
    assert rewrite.effective_instructions(np.full(100, 10)) == pytest.approx(100)  # uniform: all of them
    assert rewrite.instructions_holding(np.full(100, 10), 0.99) == 99
    assert rewrite.effective_instructions(np.array([1000, 0, 0])) == pytest.approx(1)
    skewed = rewrite.split_counts(50_000, 1000, 0.03)
    assert rewrite.effective_instructions(skewed) < 100  # a = 0.03: one rule holds most of the budget
    assert rewrite.effective_instructions(rewrite.split_counts(50_000, 1000, 0.5)) > 500


@pytest.mark.parametrize("fields,message", [
    ({"title": "t", "x": "noop_share", "series": "n_instructions",
      "params": {"sweep": {"mode": "grid", "instructions": [4, 8]}}}, "'noop_share' is not an axis"),
    ({"title": "t", "params": {"sweeps": {"mode": "grid"}}}, "params.sweeps is not a section"),
    ({"title": "t", "params": {"sweep": {"instructions": [4, 8]}}}, "experiments run grid sweeps"),
    ({"title": "t", "params": {"sweep": {"mode": "grid", "epoch": 3}}}, "unknown key 'epoch'; did you mean 'epochs'"),
    ({"title": "t", "xx": 1}, "unknown key 'xx'"),
    ({"params": {}}, "give it a title"),
])
def test_bad_declarations(tiny, in_tmp, fields, message):
    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "bad", **fields)
    with pytest.raises(ConfigError, match=message):
        experiments.load("bad")
    with pytest.raises(ConfigError, match="no experiment 'nope'.*known: bad"):
        experiments.load("nope")


@pytest.mark.parametrize("axis,values,x,series", [
    ("noop_share", [0.1, 0.5], "n_instructions", "noop_share"),
    ("skew", [1.0, 0.1], "skew", "n_instructions"),
])
def test_tiny_experiment_end_to_end(tiny, in_tmp, axis, values, x, series):
    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "tiny", title="Tiny", paper="The paper's finding.", x=x, series=series,
            params={"sweep": {"mode": "grid", "study": "exp-tiny", "instructions": [4, 8], "axes": {axis: values}},
                    "rewrite": {"total_examples": 400}})
    metrics = experiments.run("tiny")
    assert metrics["trials"] == 4
    points = pd.read_csv(in_tmp / "reports/tiny/points.csv")
    assert sorted(zip(points["n_instructions"], points[axis])) == sorted((i, v) for i in (4, 8) for v in values)
    assert set(points["seeds"]) == {1}
    if axis == "skew":
        assert (points["effective_instructions"] <= points["n_instructions"] + 1e-6).all()
        assert (points["instructions_holding_99pct"] <= points["n_instructions"]).all()
    trials = pd.read_csv(in_tmp / "reports/tiny/trials.csv")
    assert set(trials["state"]) == {"COMPLETE"}
    assert json.loads((in_tmp / "reports/tiny/metrics.json").read_text())["points"]
    assert (in_tmp / "reports/tiny/figure.png").stat().st_size > 10_000
    index = (in_tmp / "reports/index.md").read_text()
    assert "## Tiny" in index and "tiny/figure.png" in index and "The paper's finding." in index
    assert yaml.safe_load((in_tmp / "reports/tiny/params.yaml").read_text())["rewrite"]["total_examples"] == 400


def test_experiment_stages_are_declared_apart_from_the_default_pipeline():
    """`dvc repro` (dvc.yaml) leaves the long experiments alone; experiments/dvc.yaml has one stage each."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    dvc = os.path.join(os.path.dirname(sys.executable), "dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    listed = subprocess.run([dvc, "stage", "list", "experiments/dvc.yaml", "--name-only"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    declared = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml") if p.name != "dvc.yaml")
    assert sorted(line.split("@")[1] for line in listed.stdout.split()) == declared
    default = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert not any(line.startswith("experiment") for line in default.stdout.split())
