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
    """reports/code/figure.png, points.csv and metrics.json from every mix's evaluation."""
    rows = []
    for percent in params.mix.general_percents:
        path = EVALS_DIR / f"general-{percent}.json"
        if not path.is_file():
            raise DataError(f"{path} not found; evaluate that mix first: dvc repro code_eval@{percent}")
        m = json.loads(path.read_text())
        rows.append({"general_percent": percent, "pass_at_1": m["pass_at_1"], "parse_rate": m["parse_rate"],
                     "programs": m["programs"], "paper_average": PAPER.get(percent)})
    points = pd.DataFrame(rows).sort_values("general_percent")
    # The binomial standard error of each pass@1 over its held-out programs: how far apart two mixes must
    # be before the test set alone cannot explain it (one seed each: training adds its own spread).
    points["pass_at_1_se"] = np.sqrt(points["pass_at_1"] * (1 - points["pass_at_1"]) / points["programs"]).round(4)
    points.to_csv(REPORT_DIR / "points.csv", index=False)
    verdict = sweet_spot(points)
    metrics = {"points": points.replace({np.nan: None}).to_dict("records"), "verdict": verdict}
    (REPORT_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    figure(points, verdict, REPORT_DIR / "figure.png")
    return metrics


def sweet_spot(points: pd.DataFrame) -> str:
    """Says plainly whether a small general-domain share beats both none and the most."""
    best = points.loc[points["pass_at_1"].idxmax()]
    at = int(best["general_percent"])
    none = points[points["general_percent"] == points["general_percent"].min()]["pass_at_1"].iloc[0]
    most = points[points["general_percent"] == points["general_percent"].max()]["pass_at_1"].iloc[0]
    lo, hi = points["general_percent"].min(), points["general_percent"].max()
    se = f"; standard error about {points['pass_at_1_se'].mean():.3f} per point" if "pass_at_1_se" in points else ""
    if lo < at < hi and best["pass_at_1"] > max(none, most):
        return (f"a sweet spot appears: pass@1 {best['pass_at_1']:.3f} at {at}% general rows, "
                f"against {none:.3f} at {lo}% and {most:.3f} at {hi}% (one seed each{se}: check it holds over "
                "seeds)")
    return (f"no sweet spot at this scale: the best pass@1 is {best['pass_at_1']:.3f} at "
            f"{at}% general rows ({none:.3f} at {lo}%, {most:.3f} at {hi}%; one seed each{se})")


def figure(points: pd.DataFrame, verdict: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=120)
    ours.errorbar(points["general_percent"], points["pass_at_1"], yerr=points["pass_at_1_se"], marker="o", capsize=3,
                  label="pass@1 (held-out programs) +- 1 s.e.")
    ours.plot(points["general_percent"], points["parse_rate"], marker="s", linestyle="--", label="parses")
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
