"""The pipeline end to end: real `dvc repro` in a temporary copy of the project with tiny params, a real
MLflow SQLite store read back with MlflowClient, then `dvc exp run -S` and DVC's metrics/params/plots."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from conftest import REPO, write_params

BIN = Path(sys.executable).parent


def sh(*args, cwd, env):
    out = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture
def project(tmp_path, tiny):
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    tiny["sweep"].update(mode="grid", instructions=[4, 8, 16])  # tiny models: a grid, whatever they learn
    tiny["evaluate"]["learned_at"] = 0  # tiny models learn nothing in 30 steps: test the machinery, judge nothing
    write_params(root / "params.yaml", tiny)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    sh("git", "init", "-q", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "tiny project", cwd=root, env=env)
    return root, env


def test_dvc_repro_end_to_end(project):
    root, env = project
    out = sh("dvc", "repro", cwd=root, env=env)
    assert "unseen accuracy" in out  # the headline is printed

    metrics = json.loads((root / "reports/metrics.json").read_text())
    for key in ("seen_accuracy", "unseen_accuracy", "unseen_op_accuracy", "unseen_noop_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    manifest = json.loads((root / "data/rewrite/manifest.json").read_text())
    assert manifest["files"]["train"]["rows"] == 640
    assert (root / "reports/plots/val_accuracy.csv").read_text().startswith("step,")
    threshold = json.loads((root / "reports/threshold.json").read_text())
    assert threshold["runs"] == 3 and threshold["untrained_runs"] == 0
    assert (root / "reports/sweep/phase_diagram.png").is_file()
    assert (root / "studies/tests.journal").is_file()  # the study, beside the reports
    # the code-instruction data: one training set per general-domain percent, exact at the fixed budget
    assert json.loads((root / "data/code/manifest.json").read_text())["files"]["train"]["rows"] == 60
    for percent, general_rows in ((0, 0), (25, 10)):
        counts = json.loads((root / f"data/mix/general-{percent}.json").read_text())
        assert counts["rows"] == 40 and sum(v for k, v in counts["sources"].items() if k != "code") == general_rows

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("tests")
    assert exp.artifact_location.startswith((root / "mlruns").as_uri())
    trained_filter = "attributes.run_name LIKE 'rewrite-I%'"  # the train stage's runs, not the sweep's
    (run,) = client.search_runs([exp.experiment_id], trained_filter)
    assert run.info.status == "FINISHED"
    assert run.data.params["rewrite.n_instructions"] == "32" and run.data.params["model.n_layer"] == "2"
    assert run.data.tags["data.train.sha256"] == manifest["files"]["train"]["sha256"]
    assert len(run.data.tags["git_commit"]) == 40
    assert len(client.get_metric_history(run.info.run_id, "val/unseen_op_accuracy")) == 3
    assert run.data.metrics["test/unseen_op_accuracy"] == pytest.approx(metrics["unseen_op_accuracy"])
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert inputs["rewrite/train"] == manifest["files"]["train"]["sha256"][:16] and len(inputs) == 5
    (model,) = client.search_logged_models([exp.experiment_id])
    assert model.source_run_id == run.info.run_id
    assert {m.key for m in model.metrics} >= {"test/unseen_op_accuracy", "test/seen_accuracy"}
    assert client.get_model_version_by_alias("instdiv-rewrite", "champion").run_id == run.info.run_id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "evaluation" in artifacts

    # nothing changed: nothing reruns
    again = sh("dvc", "repro", cwd=root, env=env)
    stages = ("generate", "train", "evaluate", "sweep", "estimate")
    assert all(f"Stage '{s}' didn't change" in again for s in stages), again
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=root, env=env))
    assert "unseen_op_accuracy" in json.dumps(shown)
    plots = sh("dvc", "plots", "show", "--json", cwd=root, env=env)
    assert "val_accuracy.csv" in plots

    # a variant through DVC's experiments: only the stages downstream of the change run, in a new MLflow run
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "baseline", cwd=root, env=env)
    sh("dvc", "exp", "run", "-S", "rewrite.n_instructions=16", "evaluate", cwd=root, env=env)
    diff = json.loads(sh("dvc", "params", "diff", "--json", cwd=root, env=env))
    change = diff["params.yaml"]["rewrite.n_instructions"]
    assert (change["old"], change["new"]) == (32, 16)
    trained = client.search_runs([exp.experiment_id], trained_filter)
    assert sorted(r.data.params["rewrite.n_instructions"] for r in trained) == ["16", "32"]
    # the sweep: one parent run for the study, one nested run per trial
    (parent,) = client.search_runs([exp.experiment_id], "attributes.run_name LIKE 'study %'")
    nested = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(nested) == 3
