"""Search designs with seeds: the adaptive threshold search against grids of the same cost, on simulated
studies whose threshold is known (src/instdiv/engine/sweep/simulate.py: the sampler's own `propose`, the
estimate's own per-seed fits and seed interval).

    python benchmarks/threshold_search.py [--studies 200] [--seed-sd 0.15] [--from reports/threshold.json]
                                          [--json benchmarks/threshold_search_cpu.json]

For each true threshold and range: the threshold mode (sweep.max_trials runs = points x seeds) and a grid
of log-spaced I with as many runs; how often the 90% interval covers the truth, how wide it is, and how far
the estimate lands. `--from` takes the seed-to-seed spread (sd of the log thresholds) measured by a
finished study instead of --seed-sd. Figures are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from instdiv.engine.sweep import simulate as sim


def compare(curves: sim.Curves, lo: int, hi: int, seeds: int, runs: int, studies: int, rng) -> dict:
    points = runs // seeds
    adaptive = [sim.threshold_study(curves, rng, lo, hi, seeds, runs) for _ in range(studies)]
    values = [int(round(v)) for v in np.geomspace(lo, hi, points)]
    grid = [sim.grid_study(curves, rng, values, seeds) for _ in range(studies)]
    return {"adaptive": sim.summary(curves, adaptive), "grid": {**sim.summary(curves, grid), "values": values}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--seed-sd", type=float, default=0.15, help="sd of a seed's log threshold")
    ap.add_argument("--from", dest="source", type=Path, help="a threshold.json whose per-seed spread to use")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    seed_sd = args.seed_sd
    if args.source:
        per_seed = [v for v in json.loads(args.source.read_text())["per_seed"].values() if v]
        seed_sd = float(np.std(np.log(per_seed), ddof=1)) if len(per_seed) > 1 else seed_sd
    rng = np.random.default_rng(0)
    results = {"seed_sd": round(seed_sd, 3), "studies": args.studies, "cases": []}
    for lo, hi in ((64, 1024), (16, 4096)):
        for truth in (150, 300, 600):
            for seeds, runs in ((3, 12), (3, 18)):
                curves = sim.Curves(threshold=truth, seed_sd=seed_sd)
                row = {"range": [lo, hi], "threshold": truth, "seeds": seeds, "runs": runs,
                       **compare(curves, lo, hi, seeds, runs, args.studies, rng)}
                results["cases"].append(row)
                a, g = row["adaptive"], row["grid"]
                print(f"I in {lo}-{hi}, truth {truth}, {seeds} seeds x {runs // seeds} points: "
                      f"adaptive coverage {a['coverage']:.2f}, interval x{a['median_interval_ratio']:.2f}, "
                      f"error x{a['median_error_factor']:.3f} (p90 x{a['p90_error_factor']:.2f}) | grid "
                      f"coverage {g['coverage']:.2f}, interval x{g['median_interval_ratio']:.2f}, error "
                      f"x{g['median_error_factor']:.3f} (p90 x{g['p90_error_factor']:.2f})", flush=True)
    if args.json:
        clean = json.loads(json.dumps(results, default=float).replace("NaN", "null"))
        args.json.write_text(json.dumps(clean, indent=2) + "\n")
    assert all(math.isfinite(c["adaptive"]["coverage"]) for c in results["cases"])


if __name__ == "__main__":
    main()
