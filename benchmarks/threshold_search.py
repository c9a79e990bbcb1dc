"""Search efficiency: the adaptive threshold search against a dense grid, on the same trial settings.

    python benchmarks/threshold_search.py [--params params.yaml] [--grid-points 18] [--json out.json]

Runs (or resumes: studies are keyed by their settings, so finished ones are reused) two sweeps of the
`sweep` section: mode `grid` over `--grid-points` log-spaced instruction counts spanning
sweep.instructions, and mode `threshold` with its sweep.max_trials. Both are fitted the same way
(src/instdiv/engine/estimate.py). Target: the adaptive estimate within a factor 1.25 of the grid's, with at most
a third of its training runs. Figures are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from instdiv.engine import estimate, sweep
from instdiv.params import load_params


def run_mode(base, **changes) -> dict:
    params = base.replace(sweep=base.sweep.replace(**changes))
    with tempfile.TemporaryDirectory() as tmp:
        frame = sweep.run(params, Path(tmp) / "trials.csv")
    done = frame[frame["state"] == "COMPLETE"]
    s = params.sweep
    est = estimate.estimate(done["n_instructions"], done[s.metric], s.target, s.bootstrap, s.confidence)
    return {"study": sweep.study_name(params), "training_runs": int(len(done)),
            "threshold": est["threshold_instructions"], "ci": [est["ci_low"], est["ci_high"]],
            "plateau": est["fit"]["plateau"] if est["fit"] else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--grid-points", type=int, default=18)
    ap.add_argument("--json")
    args = ap.parse_args()
    base = load_params(args.params)
    lo, hi = min(base.sweep.instructions), max(base.sweep.instructions)
    grid = sorted({int(round(v)) for v in np.geomspace(lo, hi, args.grid_points)})
    adaptive = run_mode(base, mode="threshold")
    print("adaptive:", json.dumps(adaptive), flush=True)
    dense = run_mode(base, mode="grid", instructions=grid, seeds=base.sweep.seeds[:1])
    print("grid:", json.dumps(dense), flush=True)
    ratio = max(adaptive["threshold"], dense["threshold"]) / min(adaptive["threshold"], dense["threshold"])
    result = {"adaptive": adaptive, "grid": dense, "estimate_ratio": round(ratio, 3),
              "run_fraction": round(adaptive["training_runs"] / dense["training_runs"], 3),
              "within_1.25x": ratio <= 1.25,
              "at_most_a_third": adaptive["training_runs"] * 3 <= dense["training_runs"]}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
