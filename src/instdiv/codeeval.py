"""Score the code models by running what they write (stage `code_eval@<percent>`), and the report
(stage `code_report`): pass@1 against the share of general-domain rows, beside the paper's table.

The model's greedy output for each held-out program is executed in the sandbox against the hidden asserts:
pass@1 is the share that passes, `parse_rate` the share that is valid Python at all. Benchmark files in
HumanEval or MBPP form (`code_model.benchmarks`) are scored the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from instdiv import codetasks, loaders, sandbox, tokenizer as tok
from instdiv.codetrain import model_path
from instdiv.config import CodeModelConfig, Params
from instdiv.errors import DataError
from instdiv.evaluate import greedy, load_checkpoint

REPORT_DIR = Path("reports/code")
EVALS_DIR = REPORT_DIR / "evals"  # one file per mix, what the report reads
# The paper (DeepSeek-Coder-6.7B, 20K budget, mean of HumanEval, HumanEval+, MBPP, MBPP+): percent of
# Alpaca rows -> average pass@1.
PAPER = {0: 64.2, 5: 66.2, 10: 67.1, 15: 66.2, 20: 66.0, 25: 64.5}


@torch.no_grad()
def complete(model, instructions: list[str], width: int, batch_size: int, device) -> list[str]:
    """Greedy responses to instructions, as text; a prompt longer than any seen in training gets ""."""
    n_new = model.cfg.block_size - width + 1
    prompts = [tok.text_prompt(i) for i in instructions]
    fits = [i for i, p in enumerate(prompts) if tok.byte_length(p) <= width]
    ids, mask = tok.prompt_tensors([prompts[i] for i in fits], width, tok.encode_bytes)
    model.eval()
    written = [""] * len(prompts)
    for start in range(0, len(fits), batch_size):
        out = greedy(model, ids[start:start + batch_size].to(device), mask[start:start + batch_size].to(device),
                     n_new).cpu()
        for row, i in zip(out, fits[start:start + batch_size]):
            written[i] = tok.decode_bytes(row)
    return written


def sandbox_limits(cm: CodeModelConfig) -> sandbox.Limits:
    return sandbox.Limits(seconds=cm.timeout_seconds, memory_mb=cm.memory_mb)


def score(programs: list[str], tests: list[str], limits: sandbox.Limits, workers: int | None) -> dict:
    results = sandbox.run_many(list(zip(programs, tests)), limits, workers)
    statuses = pd.Series([r.status for r in results])
    return {"pass_at_1": round(float(np.mean([r.passed for r in results])), 4) if results else float("nan"),
            "parse_rate": round(float(np.mean([sandbox.parses(p) for p in programs])), 4) if programs else float("nan"),
            "programs": len(programs), "statuses": statuses.value_counts().to_dict()}, results


def samples(test: dict, programs: list[str], results: list, n: int = 40) -> pd.DataFrame:
    """The first n held-out programs: what was asked, expected and written, and how it ran."""
    return pd.DataFrame({"structure": test["structure"], "instruction": test["instruction"],
                         "expected": test["target"], "written": programs,
                         "status": [r.status for r in results]}).head(n)


def evaluate(params: Params, percent: int) -> dict:
    """pass@1 on the held-out synthetic programs (and the benchmarks); reports/code/general-<percent>.json."""
    cm = params.code_model
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = model_path(percent)
    model, extras = load_checkpoint(path, device, f"code_train@{percent}")
    width = extras["prompt_width"]
    limits = sandbox_limits(cm)
    test = codetasks.read_split("test").to_pydict()
    programs = complete(model, test["instruction"], width, 64, device)
    metrics, results = score(programs, test["test"], limits, cm.workers)
    metrics = {"general_percent": percent, **metrics}
    for bench in cm.benchmarks:
        problems = loaders.load_benchmark(bench)
        asks = [f"Complete this Python function:\n{p['prompt']}" for p in problems]
        written = complete(model, asks, width, 64, device)
        metrics[f"benchmark/{Path(bench).stem}"] = score(written, [p["test"] for p in problems], limits,
                                                          cm.workers)[0]
    EVALS_DIR.mkdir(parents=True, exist_ok=True)
    (EVALS_DIR / f"general-{percent}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    samples(test, programs, results).to_csv(EVALS_DIR / f"general-{percent}-samples.csv", index=False)
    _log(params, percent, metrics)
    return metrics


def _log(params: Params, percent: int, metrics: dict) -> None:
    import mlflow

    from instdiv.tracking import tracking_uri

    info = model_path(percent).with_suffix(".json")
    if not info.is_file():
        return
    run_id = json.loads(info.read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri(params.tracking))
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            client.log_metric(run_id, f"test/{key}", value)
        elif isinstance(value, dict) and "pass_at_1" in value:
            client.log_metric(run_id, f"test/{key}/pass_at_1", value["pass_at_1"])
    client.log_artifact(run_id, str(EVALS_DIR / f"general-{percent}.json"), "evaluation")
    client.log_artifact(run_id, str(EVALS_DIR / f"general-{percent}-samples.csv"), "evaluation")


def report(params: Params) -> dict:
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
