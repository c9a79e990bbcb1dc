"""The code study's report (stage `code_report`): pass@1 against the share of general-domain rows, beside the
paper's table, and a plain statement of whether a sweet spot appears."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from instdiv.errors import DataError

REPORT_DIR = Path("reports/code")
EVALS_DIR = REPORT_DIR / "evals"  # one file per mix, what the report reads
# The paper (DeepSeek-Coder-6.7B, 20K budget, mean of HumanEval, HumanEval+, MBPP, MBPP+): percent of
# Alpaca rows -> average pass@1.
PAPER = {0: 64.2, 5: 66.2, 10: 67.1, 15: 66.2, 20: 66.0, 25: 64.5}
def report(params) -> dict:
    """reports/code/figure.png, points.csv and metrics.json from every mix's and seed's evaluation: per mix the
    mean pass@1 over the seeds whose models learned their own training programs, with its interval over seeds."""
    from instdiv.engine.findings import seed_interval

    runs = []
    from instdiv.tasks.code.task import benchmark_name

    benches = [benchmark_name(b) for b in params.code_model.benchmarks]
    for percent in params.mix.general_percents:
        for seed in params.code_model.seeds:
            path = EVALS_DIR / f"general-{percent}-seed{seed}.json"
            if not path.is_file():
                raise DataError(f"{path} not found; evaluate that model first: "
                                f"dvc repro experiments/dvc.yaml:code_eval@{percent}-{seed}")
            m = json.loads(path.read_text())
            run = {"general_percent": percent, "seed": seed, "pass_at_1": m["pass_at_1"],
                   "parse_rate": m["parse_rate"], "train_pass_at_1": m.get("train_pass_at_1"),
                   "learned": m.get("learned", True), "programs": m["programs"]}
            for bench in benches:
                for what in ("pass_at_1", "prompts_fitting", "problems"):
                    run[f"{bench}_{what}"] = m.get(f"{bench}_{what}")
            runs.append(run)
    runs = pd.DataFrame(runs)
    runs.to_csv(REPORT_DIR / "runs.csv", index=False)
    rows = []
    confidence = params.sweep.confidence
    for percent, g in runs.groupby("general_percent"):
        trained = g[g["learned"].astype(bool)]
        mean, lo, hi = seed_interval(trained["pass_at_1"].tolist(), confidence)
        row = {"general_percent": percent, "pass_at_1": mean, "pass_at_1_low": lo, "pass_at_1_high": hi,
               "parse_rate": trained["parse_rate"].mean(), "train_pass_at_1": g["train_pass_at_1"].mean(),
               "seeds": len(trained), "untrained": len(g) - len(trained), "paper_average": PAPER.get(percent)}
        for bench in benches:  # real benchmarks: pass@1 over seeds, and how many prompts fit the context
            b_mean, b_lo, b_hi = seed_interval(trained[f"{bench}_pass_at_1"].dropna().tolist(), confidence)
            row.update({f"{bench}_pass_at_1": b_mean, f"{bench}_pass_at_1_low": b_lo,
                        f"{bench}_pass_at_1_high": b_hi,
                        f"{bench}_prompts_fitting": g[f"{bench}_prompts_fitting"].min(),
                        f"{bench}_problems": g[f"{bench}_problems"].max()})
        rows.append(row)
    points = pd.DataFrame(rows).sort_values("general_percent")
    points.round(4).to_csv(REPORT_DIR / "points.csv", index=False)
    verdict = sweet_spot(runs, confidence)
    metrics = {"runs": len(runs), "untrained": int((~runs["learned"].astype(bool)).sum()),
               "points": points.round(4).replace({np.nan: None}).to_dict("records"), "verdict": verdict}
    from instdiv.engine import reports

    # metrics.json: the counts and each mix's pass@1 with its interval (general_0, general_5, ...)
    numeric = {"runs": metrics["runs"], "untrained": metrics["untrained"],
               **{f"general_{p['general_percent']}": {k.removeprefix("pass_at_1_") or k: p[k] for k in
                                                       ("pass_at_1", "pass_at_1_low", "pass_at_1_high")}
                  for p in metrics["points"]}}
    reports.write(REPORT_DIR, numeric, metrics)
    reports.gather(REPORT_DIR.parent)  # reports/experiments.json, what dvc metrics show lists
    figure(points, runs, verdict, REPORT_DIR / "figure.png", benches)
    return metrics


def sweet_spot(runs: pd.DataFrame, confidence: float = 0.9) -> str:
    """Says plainly whether the paper's sweet spot (10% general rows beating none and 25%) holds over seeds:
    the per-seed differences of trained models and their interval."""
    from instdiv.engine.findings import seed_interval

    trained = runs[runs["learned"].astype(bool)] if "learned" in runs else runs
    by = trained.pivot_table(index="seed", columns="general_percent", values="pass_at_1")
    percents = sorted(runs["general_percent"].unique())
    lo_p, hi_p = percents[0], percents[-1]
    mid = 10 if 10 in percents else percents[len(percents) // 2]  # the paper's best: 2K of 20K
    untrained = len(runs) - len(trained)
    out = []
    for other in (lo_p, hi_p):
        if mid not in by or other not in by:
            return f"not testable at this scale: {untrained} of {len(runs)} models did not learn their own programs"
        diffs = (by[mid] - by[other]).dropna()
        mean, low, high = seed_interval(diffs.tolist(), confidence)
        if len(diffs) < 2:
            return (f"not testable at this scale: {len(diffs)} seed(s) with trained models at {mid}% and {other}% "
                    f"({untrained} of {len(runs)} models did not learn their own programs)")
        out.append((other, mean, low, high))
    spot = all(low > 0 for _, _, low, _ in out)
    said = "; ".join(f"{mid}% - {other}%: {mean:+.3f} ({confidence:.0%} interval {low:+.3f} to {high:+.3f})"
                     for other, mean, low, high in out)
    head = "a sweet spot appears" if spot else "no sweet spot at this scale"
    return f"{head}: pass@1 {said}, over {len(by)} seeds ({untrained} of {len(runs)} models untrained, left out)"


def figure(points: pd.DataFrame, runs: pd.DataFrame, verdict: str, path: Path, benches=()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=120)
    learned = runs["learned"].astype(bool)
    ours.scatter(runs.loc[learned, "general_percent"], runs.loc[learned, "pass_at_1"], s=14, alpha=0.5,
                 color="tab:blue")
    ours.scatter(runs.loc[~learned, "general_percent"], runs.loc[~learned, "pass_at_1"], s=18, facecolors="none",
                 edgecolors="tab:blue", label=f"untrained models ({(~learned).sum()})")
    yerr = np.vstack([(points["pass_at_1"] - points["pass_at_1_low"]).fillna(0),
                      (points["pass_at_1_high"] - points["pass_at_1"]).fillna(0)])
    ours.errorbar(points["general_percent"], points["pass_at_1"], yerr=yerr, marker="o", capsize=3, color="tab:blue",
                  label="pass@1 (held-out programs), mean and interval over seeds")
    ours.plot(points["general_percent"], points["train_pass_at_1"], marker="^", linestyle=":", color="tab:gray",
              label="pass@1 on its own training programs")
    ours.plot(points["general_percent"], points["parse_rate"], marker="s", linestyle="--", label="parses")
    for bench in benches:
        fit, total = points[f"{bench}_prompts_fitting"].min(), points[f"{bench}_problems"].max()
        ours.plot(points["general_percent"], points[f"{bench}_pass_at_1"], marker="D", linestyle="-.",
                  label=f"pass@1 on {bench} ({fit:.0f} of {total:.0f} prompts fit the model's context)")
    ours.set_ylim(-0.02, 1.02)
    ours.set_xlabel("general-domain rows (%) at a fixed budget")
    ours.set_title("Here: byte-level GPT on synthetic code tasks", fontsize=9)
    ours.legend(fontsize=8)
    paper = pd.Series(PAPER)
    theirs.plot(paper.index, paper.values, marker="o", color="tab:red")
    for x, y in paper.items():
        theirs.annotate(f"{y}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    theirs.set_xlabel("Alpaca rows (%) in a 20K OSS-Instruct budget")
    theirs.set_ylabel("average pass@1 (%)")
    theirs.set_title("Paper: DeepSeek-Coder-6.7B, HumanEval(+)/MBPP(+)", fontsize=9)
    fig.suptitle("Code generation against the share of general-domain instructions", fontsize=10)
    fig.text(0.01, 0.01, verdict, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
