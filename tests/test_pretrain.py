"""Bases the suite pretrains itself: the standard library as a code corpus, `instdiv pretrain NAME`, a
fine-tuning run that starts from the base (model.init), and a sweep axis that compares base and scratch."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import pytest
import torch

from instdiv.engine import model as models
from instdiv.engine import stages, training
from instdiv.engine.sweep import study as sweep_study
from instdiv.engine.sweep.workers import run as run_sweep
from instdiv.errors import ConfigError
from instdiv.params import load_params
from instdiv.tasks import pycode
from instdiv.tasks.rewrite import TASK as REWRITE

from conftest import params, write_params

SMALL_CORPUS = {"n_files": 40, "include_tests": False, "chunk_chars": 64, "continuation": 8, "held_out": 0.03,
                "n_valid": 16, "n_test": 16, "seed": 0}


def test_the_standard_library_corpus_holds_whole_files_out_and_says_what_it_read():
    cfg = pycode.PyCodeConfig(**SMALL_CORPUS)
    tables = pycode.generate(cfg)
    again = pycode.generate(cfg)
    assert all(tables[k].equals(again[k]) for k in tables)  # the same seed, the same rows
    train_files = set(tables["train"].column("file").to_pylist())
    held = set(tables["valid_held_out"].column("file").to_pylist()) | set(tables["test_held_out"].column("file").to_pylist())
    assert len(train_files) == 40 and not train_files & held  # no held-out window comes from a trained file
    about = json.loads(tables["train"].schema.metadata[b"corpus"])
    assert len(about["corpus_sha256"]) == 64 and about["files"] > 700  # the real standard library
    row = tables["valid_held_out"].slice(0, 1).to_pylist()[0]
    assert len(row["prompt"]) == 56 and len(row["text"]) == 8
    examples = pycode.TASK.examples(tables["train"])
    assert set(examples.prompts) == {""} and all(len(t) == 64 for t in examples.targets)  # loss on all of it
    root, _ = pycode.source_files()
    name = tables["train"].column("file")[0].as_py()
    assert tables["train"].column("text")[0].as_py() == (root / name).read_text()[:64]


def test_excluding_tests_leaves_out_the_test_packages():
    files, _ = pycode.corpus(pycode.PyCodeConfig(include_tests=False))
    assert files and not any(p.startswith("test/") or "/tests/" in p for p, _ in files)


@pytest.fixture
def pretrained(tiny, in_tmp):
    """A base pretrained on plain rewriting with more rules, with room for encrypted prompts."""
    tiny["pretrain"] = {"bases": {"plain": {"task": "rewrite", "params": {
        "rewrite": {"n_instructions": 64, "total_examples": 1280}, "model": {"block_size": 40},
        "train": {"max_steps": 20}}}}}
    p = params(tiny)
    out = stages.pretrain(p, "plain")
    return p, out


def test_pretrain_writes_a_base_tracked_in_its_own_experiment(pretrained, in_tmp):
    p, out = pretrained
    assert stages.base_path("plain").is_file() and out["info"]["steps"] == 20
    assert (in_tmp / "data/pretrain/plain/manifest.json").is_file()
    assert "seen_accuracy" in json.loads((in_tmp / "reports/pretrain/plain/metrics.json").read_text())
    network, _ = models.load(stages.base_path("plain"))
    assert network.block_size == 40  # model.block_size, beyond the plain data's 19 + 10
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    run = client.get_run(out["info"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "tests-pretrain"
    assert run.data.params["rewrite.n_instructions"] == "64"
    # a base never takes the registry name (and alias champion) of the default pipeline's model
    assert "registered_model" not in out["info"] and not client.search_registered_models()


def test_fine_tuning_starts_from_the_base(pretrained, tiny):
    p, _ = pretrained
    tiny["rewrite"].update(encrypt=True)
    tiny["model"].update(init=str(stages.base_path("plain")))
    ft = params(tiny)
    stages.generate(ft, REWRITE, Path("data/enc"))
    tok = stages.tokenizer(ft, REWRITE)
    data = training.fit_data(REWRITE, tok, ft, REWRITE.read(Path("data/enc"))[0])
    from instdiv import registry

    network = registry.family("gpt").build(ft.model, tok, data.block_size)
    base, _ = models.load(stages.base_path("plain"))
    assert network.training and all(torch.equal(a, b) for a, b in zip(network.state_dict().values(),
                                                                     base.state_dict().values()))
    # the fingerprint names the base: another base file, another run (and checkpoints)
    fp = training.fingerprint(ft, "x")
    assert fp != training.fingerprint(ft.replace(model=ft.model.replace(init=None)), "x")
    info = stages.train(ft, REWRITE, Path("data/enc"), Path("models/ft.pt"), None)
    assert info["steps"] == 30


@pytest.mark.parametrize("change,message", [
    ({"init": "models/none.pt"}, "no such model file; pretrain the base first"),
    ({"init": "BASE", "n_layer": 3}, "model.n_layer=3 but the base"),
])
def test_a_missing_or_mismatched_base_is_one_line(pretrained, tiny, change, message):
    tiny["model"].update({k: (str(stages.base_path("plain")) if v == "BASE" else v) for k, v in change.items()})
    p = params(tiny)
    stages.generate(p, REWRITE, Path("data/rewrite"))
    with pytest.raises(ConfigError, match=message):
        stages.train(p, REWRITE, Path("data/rewrite"), Path("models/ft.pt"), None)


def test_a_base_of_another_vocabulary_is_refused(tiny, in_tmp):
    tiny["pretrain"] = {"bases": {"code": {"task": "pycode", "params": {
        "pycode": SMALL_CORPUS | {"n_files": 3}, "train": {"max_steps": 2, "val_every_steps": 2}}}}}
    stages.pretrain(params(tiny), "code")
    tiny["model"].update(init=str(stages.base_path("code")))
    p = params(tiny)
    stages.generate(p, REWRITE, Path("data/rewrite"))
    with pytest.raises(ConfigError, match="reads 258 tokens and this task"):
        stages.train(p, REWRITE, Path("data/rewrite"), Path("models/ft.pt"), None)


def test_a_base_of_parts_trains_on_their_union(tiny, in_tmp):
    """pretrain.bases.<name>.parts: the corpus is the union of the task's data at each part's settings, e.g.
    plain rules (key 0) beside cipher-only no-ops: the encrypted experiments' base."""
    tiny["pretrain"] = {"bases": {"two": {"task": "rewrite", "params": {
        "rewrite": {"encrypt": True, "n_instructions": 40}, "train": {"max_steps": 4, "val_every_steps": 4}},
        "parts": {"rules": {"rewrite": {"keys": [0], "noop_share": 0.0, "total_examples": 300, "seed": 1}},
                  "cipher": {"rewrite": {"noop_share": 1.0, "total_examples": 200, "skew": 0.1}}}}}}
    out = stages.pretrain(params(tiny), "two")
    tables, manifest = REWRITE.read(Path("data/pretrain/two"))
    train = tables["train"].to_pylist()
    assert manifest["files"]["train"]["rows"] == len(train) == 500 and out["info"]["steps"] == 4
    plain = [r for r in train if r["key"] == 0]
    assert len(plain) == 300 and not any(r["is_noop"] for r in plain)
    assert all(r["is_noop"] and r["key"] > 0 for r in train if r["key"] != 0)
    # every split is the union: the rules part's unseen rules and the cipher part's
    assert len(tables["test_unseen"]) == 2 * params(tiny).rewrite.n_test_examples
    tiny["pretrain"]["bases"]["two"]["parts"]["cipher"]["rewrite"]["keys"] = [9]
    with pytest.raises(ConfigError, match=r"parts.cipher: .*keys=\[9\]"):
        stages.pretrain(params(tiny), "two")


@pytest.mark.parametrize("bases,message", [
    ({"x": {"task": "nope"}}, "unknown task 'nope'"),
    ({"x": {"task": "rewrite", "params": {"rewrite": {"n_instructionz": 5}}}}, "did you mean 'n_instructions'"),
    ({"x": {"task": "rewrite", "params": {"nope": {}}}}, "'nope' is not a section"),
])
def test_bad_bases_are_one_line(tiny, in_tmp, bases, message):
    tiny["pretrain"] = {"bases": bases}
    with pytest.raises(ConfigError, match=message):
        stages.pretrain(params(tiny), "x")


def test_a_sweep_axis_compares_the_base_with_scratch(pretrained, tiny, in_tmp):
    """`sweep.axes: {model.init: [null, <base>]}`: each trial sets the model section as its point says."""
    base = str(stages.base_path("plain"))
    tiny["sweep"].update(mode="grid", instructions=[8], axes={"model.init": [None, base]})
    tiny["train"].update(max_steps=6, val_every_steps=6)
    path = write_params(in_tmp / "params.yaml", tiny)
    frame = run_sweep(load_params(path), Path("reports/sweep/trials.csv"))
    assert sorted(frame["model.init"].fillna("none")) == sorted(["none", base])
    p = load_params(path)
    study = optuna.load_study(study_name=sweep_study.study_name(p), storage=sweep_study.open_storage(p))
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    inits = {client.get_run(t.user_attrs["mlflow_run_id"]).data.params["model.init"] for t in study.trials}
    assert inits == {"None", base}


@pytest.mark.parametrize("axes,message", [
    ({"model.nope": [1]}, "model has no key 'nope'"),
    ({"model.init": [3]}, "sweep.axes.model.init=3 has the wrong type"),
    ({"tracking.uri": ["x"]}, "not a section an axis can vary"),
])
def test_bad_dotted_axes(tiny, axes, message):
    tiny["sweep"].update(mode="grid", axes=axes)
    with pytest.raises(ConfigError, match=message):
        params(tiny)


def test_params_yaml_bases_resolve():
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    for name in p.pretrain.bases:
        bp, task = stages.base_params(p, name)
        assert bp.model.init is None and bp.tracking.experiment.endswith("-pretrain")
    assert p.pretrain.bases["rewrite"].task == "rewrite" and p.pretrain.bases["code"].task == "pycode"


def test_the_code_study_starts_from_the_code_base(tiny, in_tmp):
    """code_model.base: the code models fine-tune the base pretrained on the standard library."""
    from instdiv.tasks.code import mix, programs
    from instdiv.tasks.code import study as codetrain
    from instdiv.tasks.code.task import TASK as CODE
    from instdiv.tasks.code.task import training_params

    tiny["pretrain"] = {"bases": {"code": {"task": "pycode", "params": {
        "pycode": SMALL_CORPUS | {"n_files": 3}, "model": {"block_size": 400},
        "train": {"max_steps": 2, "val_every_steps": 2}}}}}
    stages.pretrain(params(tiny), "code")
    tiny["code_model"].update(base=str(stages.base_path("code")), epochs=1, seeds=[0])
    p = params(tiny)
    assert training_params(p).model.init == str(stages.base_path("code"))
    programs.write(programs.generate(p.code), p.code)
    mix.run(p.mix, 0)
    tok = stages.tokenizer(training_params(p), CODE)
    from instdiv import registry

    start = registry.family("gpt").build(training_params(p).model, tok, 300)
    base, _ = models.load(stages.base_path("code"))
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), base.state_dict().values()))
    info = codetrain.train(p, 0, 0)
    assert info["steps"] > 0
