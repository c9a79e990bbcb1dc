"""MLflow as its users expect it, against the local SQLite store and a real `mlflow server`: the train stage's
model registered by name with the alias `champion`, loadable as a text-in, text-out pyfunc that rewrites
strings; its evaluation metrics linked to the logged model; system metrics recorded while training."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from instdiv.engine import decoding, stages
from instdiv.engine import model as models
from instdiv.tasks.rewrite import TASK

from conftest import params

DATA = Path("data/rewrite")


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_the_default_model_is_registered_and_rewrites_text_by_name(tiny, in_tmp, monkeypatch, request, store):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    (in_tmp / "mlruns").mkdir()
    uri = request.getfixturevalue("mlflow_server") if store == "server" else f"sqlite:///{in_tmp}/mlruns/mlflow.db"
    tiny["tracking"]["uri"] = uri
    tiny["train"].update(max_steps=60, val_every_steps=30)
    p = params(tiny)
    stages.generate(p, TASK, DATA)
    info = stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    metrics = stages.evaluate(p, TASK, DATA, Path("models/model.pt"), Path("reports"), "instdiv train")
    client = mlflow.MlflowClient(uri)

    assert info["registered_model"] == "instdiv-rewrite"
    champion = client.get_model_version_by_alias("instdiv-rewrite", "champion")
    assert str(champion.version) == info["registered_version"] and champion.run_id == info["run_id"]

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/instdiv-rewrite@champion")
    tables, _ = TASK.read(DATA)
    rows = tables["test_unseen"].slice(0, 20).to_pydict()
    prompts = TASK.examples(tables["test_unseen"].slice(0, 20)).prompts
    assert prompts[0] == f"{rows['pattern'][0]}>{rows['replacement'][0]}|{rows['input'][0]}="
    network, extras = models.load(Path("models/model.pt"))
    tok = stages.tokenizer(p, TASK)
    expected = decoding.complete(network, tok, prompts, extras["prompt_width"], 64, "cpu")
    got = served.predict(prompts)
    assert got == expected and all(isinstance(g, str) for g in got)  # text in, the model's own text out

    logged = client.get_logged_model(info["model_id"])
    linked = {m.key: m.value for m in logged.metrics or []}
    assert linked["test/unseen_op_accuracy"] == pytest.approx(metrics["unseen_op_accuracy"])
    run = client.get_run(info["run_id"])
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(run.data.metrics)
    assert any(k.startswith("system/system_memory_usage") for k in run.data.metrics)

    # the next train stage run takes the alias; the previous version stays loadable by number
    p2 = p.replace(train=p.train.replace(seed=1))
    again = stages.train(p2, TASK, DATA, Path("models/model.pt"), None)
    assert str(client.get_model_version_by_alias("instdiv-rewrite", "champion").version) == again["registered_version"]
    assert int(again["registered_version"]) == int(info["registered_version"]) + 1


def test_registration_can_be_turned_off(tiny, in_tmp):
    tiny["tracking"]["registered_model"] = None
    tiny["train"].update(max_steps=10, val_every_steps=10)
    p = params(tiny)
    stages.generate(p, TASK, DATA)
    info = stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    assert "registered_model" not in info and info["model_id"]
    assert not mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db").search_registered_models()


def test_two_processes_creating_one_experiment_both_get_it(tiny, in_tmp, monkeypatch):
    """Two training processes starting at once (`dvc queue start -j 2`) both find the experiment missing; the
    second's create fails on the name's unique constraint and must use the one the first made."""
    from instdiv.engine import tracking

    cfg = params(tiny).tracking
    made = tracking.experiment_id(cfg, "race")
    real = mlflow.MlflowClient.get_experiment_by_name
    calls = []

    def first_missing(self, name):  # the state this process saw before the other one created it
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", first_missing)
    assert tracking.experiment_id(cfg, "race") == made
    assert len(calls) == 2
    run_logger = tracking.logger(cfg, run_name="second", experiment="race")
    assert run_logger.experiment_id == made
