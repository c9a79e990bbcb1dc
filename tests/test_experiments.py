"""Named experiments: declaration checks, a tiny end-to-end run per kind of axis, the report and index."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from instdiv.engine import experiments, sweep
from instdiv.errors import ConfigError
from instdiv.tasks.rewrite import TASK as REWRITE, generator as rewrite

from conftest import write_params


def declare(root, name, **fields):
    """experiments/<name>.yaml, and its knobs (scale, weights) in experiments/params.yaml, as users write them."""
    (root / "experiments").mkdir(exist_ok=True)
    knobs = {k: fields.pop(k) for k in ("scale", "weights") if k in fields}
    (root / "experiments" / f"{name}.yaml").write_text(yaml.safe_dump(fields))
    path = root / "experiments" / "params.yaml"
    table = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    path.write_text(yaml.safe_dump({**table, name: knobs}))


def copy_experiments(root, knobs: dict[str, dict] | None = None):
    """The repository's experiments into root/experiments, with `knobs` set in experiments/params.yaml."""
    from conftest import REPO

    (root / "experiments").mkdir(exist_ok=True)
    for path in (REPO / "experiments").glob("*.yaml"):
        (root / "experiments" / path.name).write_text(path.read_text())
    table = yaml.safe_load((REPO / "experiments/params.yaml").read_text())
    for name, values in (knobs or {}).items():
        table[name] = {**table[name], **values}
    (root / "experiments/params.yaml").write_text(yaml.safe_dump(table))


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
    ({"title": "t", "metrics": ["unseen_op"]}, "'unseen_op' is not a metric task rewrite reports"),
    ({"title": "t", "scale": "huge"}, "scale=huge: no such scale or preset"),
    ({"title": "t", "paper_table": {"columns": [1]}}, "paper_table: give columns"),
    ({"title": "t", "paper_table": {"columns": [1], "rows": {}}, "params": {"sweep": {"mode": "grid"}}},
     "one column per value of n_instructions"),
    ({"title": "t", "panel": "family_k", "params": {"sweep": {"mode": "grid", "instructions": [4, 8]}}},
     "'family_k' is not an axis"),
])
def test_bad_declarations(tiny, in_tmp, fields, message):
    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "bad", **fields)
    with pytest.raises(ConfigError, match=message):
        experiments.load("bad")
    with pytest.raises(ConfigError, match="no experiment 'nope'.*known: bad"):
        experiments.load("nope")


TINY_FAMILIES = {"pattern_length": 4, "replacement_length": 4, "input_length": 8}
TINY_OCCURRENCES = {"input_length": 9, "test_occurrences": [1, 3]}


@pytest.mark.parametrize("axes,x,series,panel,metrics,rewrite_changes", [
    ({"noop_share": [0.1, 0.5]}, "n_instructions", "noop_share", None, ["unseen_op_accuracy"], {}),
    ({"skew": [1.0, 0.1]}, "skew", "n_instructions", None, ["unseen_op_accuracy"], {}),
    ({"families": [["repeat"], ["periodic", "mirror"]], "family_k": [[3, 4]]}, "family_k", "families",
     "n_instructions", ["small_k_op_accuracy", "unconstrained_op_accuracy"], TINY_FAMILIES),
    ({"occurrences": [[1], [1, 3]]}, "n_instructions", "occurrences", None, ["unseen_op_accuracy"],
     TINY_OCCURRENCES),
    ({"total_examples": [400, 200], "skew": [1.0, 0.1]}, "n_instructions", "skew", "total_examples",
     ["unseen_op_accuracy", "unseen_noop_accuracy"], {"noop_share": 0.4, "encrypt": True}),
], ids=["noop", "skew", "families", "occurrences", "encrypted"])
def test_tiny_experiment_end_to_end(tiny, in_tmp, axes, x, series, panel, metrics, rewrite_changes):
    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "tiny", title="Tiny", paper="The paper's finding.", x=x, series=series, panel=panel,
            metrics=metrics, params={"sweep": {"mode": "grid", "study": "exp-tiny", "instructions": [4, 8],
                                               "axes": axes},
                                     "rewrite": {"total_examples": 400, **rewrite_changes}})
    result = experiments.run("tiny")
    combos = 2 * int(np.prod([len(v) for v in axes.values()]))
    assert result["trials"] == combos
    points = pd.read_csv(in_tmp / "reports/tiny/points.csv")
    # one seed per point; a tiny model that did not learn its rules is counted, and left out of the means
    assert len(points) == combos and set(points["seeds"] + points["untrained"]) == {1}
    runs = pd.read_csv(in_tmp / "reports/tiny/runs.csv")
    assert len(runs) == combos and (runs["learned"] == (runs["seen_op_accuracy"] >= 0.95)).all()
    for metric in metrics:
        assert points.loc[points["seeds"] == 1, metric].between(0, 1).all()
        assert points.loc[points["untrained"] == 1, metric].isna().all()
    if "skew" in axes:
        assert (points["effective_instructions"] <= points["n_instructions"] + 1e-6).all()
        assert (points["instructions_holding_99pct"] <= points["n_instructions"]).all()
    trials = pd.read_csv(in_tmp / "reports/tiny/trials.csv")
    assert set(trials["state"]) == {"COMPLETE"}
    assert json.loads((in_tmp / "reports/tiny/report.json").read_text())["points"]
    numbers = json.loads((in_tmp / "reports/tiny/metrics.json").read_text())  # what DVC compares: numbers only
    assert {"trials", "untrained", "training_minutes"} <= set(numbers)
    leaves = [v for v in numbers.values() if not isinstance(v, dict)]
    leaves += [v for d in numbers.values() if isinstance(d, dict) for v in d.values()]
    assert all(v is None or isinstance(v, (int, float)) for v in leaves)
    assert (in_tmp / "reports/tiny/figure.png").stat().st_size > 10_000
    index = (in_tmp / "reports/index.md").read_text()
    assert "## Tiny" in index and "tiny/figure.png" in index and "The paper's finding." in index
    assert yaml.safe_load((in_tmp / "reports/tiny/params.yaml").read_text())["rewrite"]["total_examples"] == 400


def test_tiny_code_experiment_end_to_end(tiny, in_tmp):
    """Optuna over code programs x general-domain share: one model per point, scored by running its programs
    on the same held-out rows, nested MLflow runs, the figure."""
    import mlflow

    from instdiv.engine.tracking import tracking_uri

    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "codemix", title="Code", paper="18K code + 2K general beat 20K code.", x="general_percent",
            series="n_programs", metrics=["pass_at_1", "parse_rate"],
            params={"sweep": {"task": "code", "metric": "pass_at_1", "mode": "grid", "study": "exp-code",
                              "instructions": [4, 8], "axes": {"general_percent": [0, 25]}}})
    result = experiments.run("codemix")
    assert result["trials"] == 4
    trials = pd.read_csv(in_tmp / "reports/codemix/trials.csv")
    assert set(trials["state"]) == {"COMPLETE"}
    assert sorted(zip(trials["n_programs"], trials["general_percent"])) == [(4, 0), (4, 25), (8, 0), (8, 25)]
    assert dict(zip(trials["n_programs"], trials["examples_per_program"])) == {4: 10, 8: 5}  # the budget of 40
    shares = trials[[c for c in trials if c.startswith("share_")]].sum(axis=1)
    assert np.allclose(shares, 1.0) and trials["pass_at_1"].between(0, 1).all()
    assert (trials["pass_at_1"] <= trials["parse_rate"] + 1e-9).all()
    points = pd.read_csv(in_tmp / "reports/codemix/points.csv")
    assert len(points) == 4 and {"pass_at_1", "parse_rate"} <= set(points)
    assert (in_tmp / "reports/codemix/figure.png").stat().st_size > 10_000
    client = mlflow.MlflowClient(tracking_uri(experiments.load("codemix")[1].tracking))
    runs = {r.info.run_id: r for r in client.search_runs(
        [client.get_experiment_by_name("tests").experiment_id])}
    for run_id in trials["mlflow_run_id"]:
        run = runs[run_id]
        assert "mlflow.parentRunId" in run.data.tags and run.data.tags["data.train.sha256"]
        assert "test/pass_at_1" in run.data.metrics and run.data.params["sweep.task"] == "code"
        assert [a.path for a in client.list_artifacts(run_id, "evaluation")] == ["evaluation/samples.csv"]
    assert len(set(trials["data_sha256"])) == 4  # four different training sets


def test_paper_table_beside_ours(tiny, in_tmp):
    """The paper's table layout with `ours / paper` cells; the report stage reads only finished trials."""
    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "occ", title="Occ", x="n_instructions", series="occurrences",
            params={"sweep": {"mode": "grid", "instructions": [4, 8], "axes": {"occurrences": [[1], [1, 3]]}},
                    "rewrite": TINY_OCCURRENCES},
            paper_table={"columns": [2000, 1000],
                         "rows": {"1": [0.71, 0.41], "mixed": [0.94, 0.94]}})
    exp, params = experiments.load("occ")
    frame = pd.DataFrame({"state": "COMPLETE", "n_instructions": [4, 8, 4, 8], "seed": 0,
                          "occurrences": ["[1]", "[1]", "[1, 3]", "[1, 3]"],
                          "unseen_op_accuracy": [0.1, 0.2, 0.3, 0.4], "fit_seconds": 1.0})
    (in_tmp / "reports/occ").mkdir(parents=True)
    metrics = experiments.report("occ", exp, params, frame)
    table = metrics["table"].splitlines()
    assert table[0] == ("| occurrences | n_instructions 8 (paper 2000) | n_instructions 4 (paper 1000) |")
    assert table[2] == "| 1 (paper 1) | 0.20 / 0.71 | 0.10 / 0.41 |"
    assert table[3] == "| mixed {1, 3} (paper mixed) | 0.40 / 0.94 | 0.30 / 0.94 |"
    assert "0.40 / 0.94" in (in_tmp / "reports/index.md").read_text()


def test_a_null_axis_value_read_back_from_trials_csv_is_a_point_and_a_side(tiny, in_tmp):
    """model.init: [null, a base]: the null cell comes back from trials.csv empty (NaN), and is still its own
    point, line and side of a finding, labelled as params.yaml writes it."""
    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "init", title="Init", x="n_instructions", series="model.init",
            params={"sweep": {"mode": "grid", "instructions": [4, 8], "seeds": [0, 1],
                              "axes": {"model.init": [None, "models/base.pt"]}}},
            findings=[{"claim": "the base helps", "margin": 0.1, "higher": {"n_instructions": 8, "model.init": "models/base.pt"},
                       "lower": {"n_instructions": 8, "model.init": None}}])
    exp, params = experiments.load("init")
    rows = [{"state": "COMPLETE", "n_instructions": i, "seed": seed, "model.init": init, "fit_seconds": 1.0,
             "seen_op_accuracy": 0.5 if (i, init) == (4, None) else 1.0,  # a point with no trained seed
             "unseen_op_accuracy": (0.9 if init else 0.2) + 0.01 * seed}
            for i in (4, 8) for seed in (0, 1) for init in (None, "models/base.pt")]
    pd.DataFrame(rows).to_csv(in_tmp / "trials.csv", index=False)
    frame = pd.read_csv(in_tmp / "trials.csv")
    assert frame["model.init"].isna().sum() == 4
    (in_tmp / "reports/init").mkdir(parents=True)
    metrics = experiments.report("init", exp, params, frame)
    assert len(metrics["points"]) == 4 and sum(p["model.init"] is None for p in metrics["points"]) == 2
    (found,) = metrics["findings"]
    assert found["runs"] == 4 and found["seeds"] == 2 and found["difference"] == pytest.approx(0.7)
    assert found["verdict"] == "reproduced"
    assert experiments.label(REWRITE, "model.init", float("nan")) == "null"
    index = (in_tmp / "reports/index.md").read_text()
    assert "| null " in index and "nan" not in index
    assert re.search(r"\| null +\| +4 \| +- \|", index)  # the point without a trained seed: no mean


def test_sweep_points_match_rows_as_run_and_as_read_back():
    from instdiv.engine.sweep import at
    frame = pd.DataFrame({"n": [4.0, 8.0, None], "init": [None, "b.pt", "b.pt"], "fam": ["[1]", "[1, 3]", "[1]"]})
    assert at(frame, {"n": 4, "init": None}).tolist() == [True, False, False]
    assert at(frame, {"init": float("nan")}).tolist() == [True, False, False]  # a NaN cell as a point value
    assert at(frame, {"fam": [1, 3]}).tolist() == at(frame, {"fam": "[1, 3]"}).tolist() == [False, True, False]
    assert at(frame, {"n": 8, "init": "b.pt"}).tolist() == [False, True, False]


def test_index_names_each_experiments_own_stage(monkeypatch):
    from conftest import REPO
    monkeypatch.chdir(REPO)
    assert experiments.stage("skew") == "experiments/dvc.yaml:experiment@skew"
    assert experiments.stage("pretrained") == "experiments/dvc.yaml:experiment_from_base@pretrained"


def test_axis_labels():
    assert experiments.label(REWRITE, "family_k", "[3, 8]") == "3-8"
    assert experiments.label(REWRITE, "families", '["repeat", "mirror"]') == "repeat+mirror"
    assert experiments.label(REWRITE, "occurrences", "[10]") == "10"
    assert experiments.label(REWRITE, "occurrences", "[1, 5, 10]") == "mixed {1, 5, 10}"
    assert experiments.label(REWRITE, "skew", 0.2) == "0.2" and experiments.label(REWRITE, "skew", 1.0) == "1 (uniform)"


@pytest.mark.parametrize("scale", ["laptop", "paper"])
def test_declared_experiments_are_possible_at_both_scales(scale, tmp_path, monkeypatch):
    """Every experiments/<name>.yaml loads and every point of its grid can be generated, at laptop scale and
    with its paper-scale overrides (`-S experiments/params.yaml:<name>.scale=paper`)."""
    from conftest import REPO
    from instdiv.engine import sweep

    monkeypatch.chdir(tmp_path)
    table = yaml.safe_load((REPO / "experiments/params.yaml").read_text())
    copy_experiments(tmp_path, {name: {"scale": scale} for name in table})
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    # the bases some experiments start from (experiments/dvc.yaml's pretrain@<name> writes them)
    from instdiv.engine import model as models
    from instdiv.engine import stages
    from instdiv.models.gpt import FAMILY as GPT
    from instdiv.models.gpt import GPTSection
    from instdiv.tasks.rewrite.text import TOKENIZER

    for base in ("rewrite", "code"):
        models.save(tmp_path / stages.base_path(base), GPT, GPT.build(GPTSection(), TOKENIZER, 40), prompt_width=30)
    names = experiments.names()
    assert {"skew", "noop", "families", "occurrences", "encrypted"} <= set(names)
    assert set(names) == set(table)  # every experiment's knobs, where dvc exp run -S finds them
    for name in names:
        exp, params = experiments.load(name)
        sweep.check(params)
        assert exp.scale == scale
        if scale == "paper":
            assert exp.paper_scale, f"{name} has no paper-scale preset"
            assert params.model.d_model == 256 and params.rewrite.alphabet_size == 26, name


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
    declared = sorted(
        p.stem for p in (REPO / "experiments").glob("*.yaml") if p.name not in ("dvc.yaml", "params.yaml"))
    stages = listed.stdout.split()
    # every experiment is a stage; those that fine-tune a pretrained base depend on it (experiment_from_base@)
    # (and the recipe experiment is its own stage: it cites the default study's estimate)
    assert sorted([s.split("@")[1] for s in stages
                   if s.split("@")[0] in ("experiments/dvc.yaml:experiment",
                                          "experiments/dvc.yaml:experiment_from_base")]
                  + [s.split(":")[1] for s in stages if s == "experiments/dvc.yaml:recipe"]) == declared
    percents = yaml.safe_load((REPO / "params.yaml").read_text())["mix"]["general_percents"]
    seeds = yaml.safe_load((REPO / "params.yaml").read_text())["code_model"]["seeds"]
    for step in ("code_train", "code_eval"):  # one model per mix and seed
        assert {f"experiments/dvc.yaml:{step}@{p}-{s}" for p in percents for s in seeds} <= set(stages)
    assert "experiments/dvc.yaml:code_report" in stages
    default = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert not any(line.startswith("experiment") for line in default.stdout.split())


def test_findings_are_judged_over_seeds_on_trained_runs_only():
    from instdiv.engine import findings

    def runs(high, low, learned=True):
        return pd.DataFrame({"seed": [0, 1, 2] * 2, "noop_share": [0.0] * 3 + [0.5] * 3,
                             "unseen_op_accuracy": [*high, *low], "learned": learned})

    claim = findings.Finding(claim="c", higher={"noop_share": 0.0}, lower={"noop_share": 0.5}, margin=0.1)
    up = findings.evaluate(claim, runs([0.8, 0.9, 0.85], [0.2, 0.3, 0.1]), "unseen_op_accuracy")
    assert up["verdict"] == "reproduced" and up["difference"] == pytest.approx(0.65) and up["seeds"] == 3
    assert up["ci_low"] > 0
    down = findings.evaluate(claim, runs([0.1, 0.2, 0.15], [0.8, 0.9, 0.85]), "unseen_op_accuracy")
    assert down["verdict"] == "differs" and "the opposite" in down["why"]
    flat = findings.evaluate(claim, runs([0.5, 0.52, 0.49], [0.5, 0.5, 0.5]), "unseen_op_accuracy")
    assert flat["verdict"] == "differs" and "no difference of 0.1 or more" in flat["why"]
    # seeds that disagree (+0.6, -0.6, 0) neither show the claim nor rule it out
    noisy = findings.evaluate(claim, runs([0.8, 0.1, 0.5], [0.2, 0.7, 0.5]), "unseen_op_accuracy")
    assert noisy["verdict"] == "not testable at this scale" and "the seeds disagree" in noisy["why"]
    same = findings.Finding(claim="c", higher={"noop_share": 0.0}, lower={"noop_share": 0.5}, expect="similar",
                            margin=0.1)
    assert findings.evaluate(same, runs([0.9, 0.91, 0.92], [0.9, 0.9, 0.93]), "unseen_op_accuracy")["verdict"] == "reproduced"
    # similar is an equivalence test: wholly outside +-0.1 differs, straddling it shows neither
    assert findings.evaluate(same, runs([0.9, 0.91, 0.92], [0.5, 0.55, 0.6]), "unseen_op_accuracy")["verdict"] == "differs"
    wide = findings.evaluate(same, runs([0.0, 0.1, 0.08], [0.02, 0.0, 0.01]), "unseen_op_accuracy")
    assert wide["verdict"] == "not testable at this scale" and "straddles" in wide["why"]
    frame = runs([0.8, 0.9, 0.85], [0.2, 0.3, 0.1])
    frame.loc[[1, 2], "learned"] = False  # two seeds did not learn: one seed left, no interval
    out = findings.evaluate(claim, frame, "unseen_op_accuracy")
    assert out["verdict"] == "not testable at this scale" and out["untrained_runs"] == 2
    # ... and over all runs, the untrained included, the claim shows: said beside, not silently dropped
    assert out["all_runs"]["verdict"] == "reproduced" and out["all_runs"]["seeds"] == 3
    assert "with all 6 runs, the 2 untrained included: reproduced" in out["why"]
    assert up["detectable"] > 0 and up["margin"] == 0.1


def test_a_finding_without_a_margin_is_one_line_naming_it(tmp_path, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(tmp_path)
    copy_experiments(tmp_path, {})
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    text = (tmp_path / "experiments/noop.yaml").read_text()
    (tmp_path / "experiments/noop.yaml").write_text("\n".join(l for l in text.splitlines()
                                                              if not l.strip().startswith("margin:")))
    with pytest.raises(ConfigError, match=r"experiments/noop.yaml: findings\[1\].margin is missing"):
        experiments.load("noop")


@pytest.mark.parametrize("name,preset", [("encrypted", "llama2-lora"), ("code_sweep", "deepseek-coder")])
def test_pretrained_model_recipes_resolve_without_weights(tmp_path, monkeypatch, name, preset):
    """The paper's pretrained-model recipes as experiment scales: the paper's data, the model's recipe, the
    weights from a local directory; validated here without the weights (which only a run reads)."""
    from conftest import REPO

    monkeypatch.chdir(tmp_path)
    copy_experiments(tmp_path, {name: {"scale": preset, "weights": f"/data/weights/{preset}"}})
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    exp, params = experiments.load(name)
    m = params.model
    assert m.kind == "hf" and m.path == f"/data/weights/{preset}" and not hasattr(m, "n_layer")
    if preset == "llama2-lora":
        assert (m.lora_r, m.lora_alpha, m.quantize, params.train.lr, params.train.batch_size,
                params.train.max_steps) == (512, 1024, "8bit", 1e-5, 64, 2000)
        assert params.rewrite.input_length == 50 and params.rewrite.encrypt  # the paper's data
    else:
        assert m.lora_r is None and params.train.max_length == 768 and params.code_model.batch_size == 4
        assert params.sweep.epochs == 3 and params.code_model.benchmarks == ["humaneval"]
    with pytest.raises(ConfigError, match="model.path=/data/weights"):
        sweep.check(params)  # a run needs the weights on disk, and says so before any work


def test_an_unknown_scale_is_one_line(tmp_path, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(tmp_path)
    copy_experiments(tmp_path, {"noop": {"scale": "llama3"}})
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(ConfigError, match="scale=llama3: no such scale or preset; known: laptop, deepseek-coder"):
        experiments.load("noop")
    (tmp_path / "experiments/noop.yaml").write_text("title: t\nscale: paper\n")
    with pytest.raises(ConfigError, match="scale is a knob; set it in experiments/params.yaml"):
        experiments.load("noop")


def test_a_recipe_experiment_measures_i50_per_setting_against_the_reference(tiny, in_tmp, monkeypatch):
    """One outcomes study per recipe value; a setting whose runs generalize at fewer rules 'moves' against the
    reference estimate; a value equal to the reference's own is refused before any training."""
    import math

    from instdiv.engine import recipe
    from instdiv.engine.sweep import workers

    def objective(trial, params):  # I_50 200 with warmup 0.1, 50 with 0.4; seeds spread it a little
        s = params.sweep
        i = trial.suggest_int("n_instructions", min(s.instructions), max(s.instructions), log=True)
        seed = trial.suggest_int("seed", 0, 100_000)
        i50 = 50.0 if params.train.warmup_frac == 0.4 else 200.0
        acc = 0.95 if math.log(i) >= math.log(i50) + 0.2 * ((seed % 3) - 1) else 0.0
        for key, value in (("unseen_op_accuracy", acc), ("seen_op_accuracy", 0.99), ("learned", True),
                           ("fit_seconds", 1.0)):
            trial.set_user_attr(key, value)
        return acc

    monkeypatch.setattr(workers, "objective", objective)
    tiny["sweep"].update(total_examples=2048)
    write_params(in_tmp / "params.yaml", tiny)
    declare(in_tmp, "rec", title="Recipe", recipe={"train.warmup_frac": [0.4]},
            params={"sweep": {"mode": "outcomes", "instructions": [16, 1024], "max_trials": 16}})
    (in_tmp / "reports").mkdir()
    (in_tmp / "reports/threshold.json").write_text(json.dumps(
        {"mode": "outcomes", "threshold_instructions": 200.0, "ci_low": 160.0, "ci_high": 250.0, "runs": 40,
         "runs_fitted": 40, "seeds": 10, "confidence": 0.9, "untrained_runs": 0, "all_runs": {"i50": 200.0}}))
    result = experiments.run("rec")
    (row,) = [p for p in result["points"] if p["axis"] == "train.warmup_frac"]
    assert row["runs"] == 16 and row["i50"] == pytest.approx(50, rel=0.35) and row["verdict"] == "moves"
    assert row["ratio_high"] < 1
    assert result["recipe"][0]["why"] == "moves at 0.4"
    assert (in_tmp / "reports/rec/figure.png").stat().st_size > 5_000
    assert "train.warmup_frac = 0.4 | 16 | 0 |" in (in_tmp / "reports/index.md").read_text()
    # the reference's own value is the default study's: never trained again
    exp, params = experiments.load("rec")
    assert [v for _, v, _ in recipe.settings(exp.replace(recipe={"train.warmup_frac": [0.1, 0.4]}), params)] == [0.4]
    declare(in_tmp, "rec", title="Recipe", recipe={"train.warmup_frac": [0.4], "train.lrr": [0.1]},
            params={"sweep": {"mode": "outcomes", "instructions": [16, 1024], "max_trials": 16}})
    with pytest.raises(ConfigError, match=r"recipe.train.lrr: not a setting"):
        experiments.run("rec")


def test_the_index_judges_the_outcome_threshold_against_the_band_and_counts_its_verdicts(tmp_path, monkeypatch):
    """reports/threshold.json from an outcomes study: reproduced only inside the paper's band, the sides judged
    on run counts, the control by the ratio of I_50, and the multiplicity sentence over the verdicts."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "reports").mkdir()
    est = {"mode": "outcomes", "threshold_instructions": 380.0, "ci_low": 320.0, "ci_high": 460.0, "confidence": 0.9,
           "runs": 32, "runs_fitted": 31, "seeds": 9, "untrained_runs": 1, "paper_band": [300, 500],
           "all_runs": {"i50": 370.0, "ci_low": 310.0, "ci_high": 450.0}, "transition": {"256": 8, "362": 9},
           "by_instructions": [{"n_instructions": 64, "runs": 2, "generalized": 0, "untrained": 0},
                               {"n_instructions": 362, "runs": 9, "generalized": 4, "untrained": 1},
                               {"n_instructions": 1024, "runs": 2, "generalized": 2, "untrained": 0}],
           "control": {"arm": "holdout=strings", "runs": 12, "seeds": 3, "confidence": 0.9,
                       "versus_study": {"pairs": 9, "first_only": 1, "second_only": 3, "p_value": 0.625,
                                        "i50_ratio": 0.8, "ratio_low": 0.4, "ratio_high": 1.6}}}
    (tmp_path / "reports/threshold.json").write_text(json.dumps(est))
    experiments.write_index()
    text = (tmp_path / "reports/index.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Generalization to unseen rules"))
    assert "| reproduced | our interval 320-460 lies inside the paper's 300-500" in row
    assert "I_50 370 (310-450), 32 runs, 1 untrained" in row
    sides = next(line for line in text.splitlines() if line.startswith("| Well below the threshold"))
    assert "0 of 2 runs generalized" in sides and "2 of 2" in sides and "| reproduced |" in sides
    control = next(line for line in text.splitlines() if "control: holdout=strings" in line)
    assert "| not testable at this scale |" in control and "McNemar p = 0.62" in control
    assert text.count("| Generalization") == 1 and "3 verdicts (2 reproduced or differs)" in text
    est.update(ci_low=200.0, ci_high=420.0)  # overlapping the band only in part: not reproduced
    (tmp_path / "reports/threshold.json").write_text(json.dumps(est))
    experiments.write_index()
    row = next(line for line in (tmp_path / "reports/index.md").read_text().splitlines()
               if line.startswith("| Generalization to unseen rules"))
    assert "| not testable at this scale | our interval 200-420 overlaps the paper's 300-500 only in part" in row
