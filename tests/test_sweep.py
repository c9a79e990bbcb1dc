"""The Optuna sweep: proposals, bad settings, grid and threshold modes, MLflow nesting, resume after a
killed sweep, concurrent workers on a real PostgreSQL server, and optuna-dashboard serving the study."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import torch

from instdiv.engine import estimate, sweep
from instdiv.engine.sweep import workers
from instdiv.errors import ConfigError, InstdivError
from instdiv.params import load_params

from conftest import free_port, wait_for, write_params


def test_propose_ends_then_bisection_then_around_the_crossing():
    assert sweep.propose({}, set(), 16, 1024, 0.5) == 1024
    assert sweep.propose({}, {1024}, 16, 1024, 0.5) == 16  # another worker has the top end
    assert sweep.propose({16: 0.0, 1024: 0.9}, set(), 16, 1024, 0.5) == 128  # geometric middle
    assert sweep.propose({16: 0.0, 128: 0.2, 1024: 0.9}, set(), 16, 1024, 0.5) == 362
    assert sweep.propose({16: 0.0, 128: 0.7, 1024: 0.9}, set(), 16, 1024, 0.5) == 45
    nxt = sweep.propose({16: 0.0, 1024: 0.9}, {128}, 16, 1024, 0.5)  # 128 is being trained: a neighbour
    assert nxt not in (16, 128, 1024) and 1.1 <= max(nxt, 128) / min(nxt, 128) <= 1.5
    assert sweep.propose({16: 0.0, 1024: 0.3}, set(), 16, 1024, 0.5) is None  # never crosses in range
    assert sweep.propose({16: 0.6, 1024: 0.9}, set(), 16, 1024, 0.5) is None  # crosses below the range
    # the target is a fraction of the plateau: nothing past the ends until the top end is measured
    assert sweep.propose({16: 0.0}, {1024}, 16, 1024, None) is None


@pytest.mark.parametrize("change,message", [
    ({"instructions": [4, 16, 32]}, "threshold mode searches a range"),
    ({"instructions": [32, 4]}, "min < max"),
    ({"target": 1.5}, "sweep.target=1.5 must be between 0 and 1"),
    ({"max_trials": 2}, "at least 3 runs"),
    ({"mode": "grid", "instructions": [4, 4]}, "lists a value twice"),
    ({"axes": {"skew": [0.5, 0.5]}, "mode": "grid"}, "lists a value twice"),
    ({"axes": {"noop_shares": [0.1]}}, "'noop_shares' is not a rewrite key .*did you mean 'noop_share'"),
    ({"axes": {"seed": [1, 2]}}, "sweep.seeds"),
    ({"axes": {"noop_share": ["half"]}}, "sweep.axes.noop_share='half' has the wrong type"),
    ({"axes": {"noop_share": [0.1, 0.5]}}, "threshold mode searches I alone"),
    ({"mode": "random"}, "sweep.mode='random' has the wrong type"),
])
def test_bad_sweep_settings(tiny, in_tmp, change, message):
    tiny["sweep"].update(change)
    with pytest.raises(ConfigError, match=message):
        load_params(write_params(in_tmp / "params.yaml", tiny))


@pytest.mark.parametrize("change,message", [
    ({}, "sweep.metric=unseen_op_accuracy is not measured by task code; choose one of pass_at_1, parse_rate"),
    ({"metric": "pass_at_1", "mode": "grid", "axes": {"general_share": [0, 10]}},
     "'general_share' is not a code key .*did you mean 'general_percent'"),
    ({"metric": "pass_at_1", "mode": "grid", "axes": {"n_programs": [4]}}, "sweep.instructions and sweep.seeds"),
])
def test_bad_code_sweep_settings(tiny, in_tmp, change, message):
    tiny["sweep"].update({"task": "code", **change})
    with pytest.raises(ConfigError, match=message):
        load_params(write_params(in_tmp / "params.yaml", tiny))
    tiny["sweep"].update(task="rewrite", metric="pass_at_1")
    with pytest.raises(ConfigError, match="not measured by task rewrite"):
        load_params(write_params(in_tmp / "params.yaml", tiny))


@pytest.mark.parametrize("change,message", [
    ({"axes": {"general_percent": [0, 150]}}, r"'general_percent': 150.*mix.general_percents"),
    ({"axes": {"examples_per_program": [1]}}, r"4 programs x code.examples_per_program=1 give fewer than the 40"),
    ({"instructions": [4, 2000]}, r"'n_programs': 2000.*lower code.n_programs"),
])
def test_impossible_code_points_fail_before_training(tiny, in_tmp, change, message):
    tiny["sweep"].update({"task": "code", "metric": "pass_at_1", "mode": "grid", "instructions": [4, 8], **change})
    with pytest.raises(ConfigError, match=message):
        sweep.check(load_params(write_params(in_tmp / "params.yaml", tiny)))
    assert not (in_tmp / "studies").exists()


def test_code_sweep_needs_the_synthetic_programs(tiny, in_tmp):
    tiny["sweep"].update(task="code", metric="pass_at_1", mode="grid", instructions=[4, 8])
    tiny["mix"]["code_source"] = "oss-instruct.jsonl"
    with pytest.raises(ConfigError, match="set mix.code_source to null for the sweep"):
        sweep.check(load_params(write_params(in_tmp / "params.yaml", tiny)))


def test_code_trials_keep_the_budget_and_one_share_each(tiny, in_tmp):
    tiny["sweep"].update(task="code", metric="pass_at_1", mode="grid", instructions=[4, 8],
                         axes={"general_percent": [0, 25]}, epochs=5)
    params = load_params(write_params(in_tmp / "params.yaml", tiny))
    few = sweep.trial_params(params, {"n_programs": 4, "general_percent": 25, "seed": 3})
    many = sweep.trial_params(params, {"n_programs": 8, "general_percent": 0, "seed": 0})
    assert (few.code.n_programs, few.code.examples_per_program, few.mix.general_percents) == (4, 10, [25])  # 40 / 4
    assert (many.code.n_programs, many.code.examples_per_program, many.mix.general_percents) == (8, 5, [0])
    assert few.mix.total_examples == many.mix.total_examples == 40
    assert (few.train.seed, few.train.epochs, few.train.batch_size) == (3, 5, 16)  # code_model's batch size
    assert sweep.study_name(params) != sweep.study_name(load_params(write_params(
        in_tmp / "p2.yaml", {**tiny, "code": {**tiny["code"], "depth": 1}})))  # code settings are in the hash


def test_impossible_point_and_sqlite_workers_fail_before_training(tiny, in_tmp):
    tiny["sweep"].update(mode="grid", instructions=[4, 5000], total_examples=10_000)  # 5000 rules: too many
    with pytest.raises(ConfigError, match=r"sweep point \{'n_instructions': 5000.*allow only"):
        sweep.check(load_params(write_params(in_tmp / "params.yaml", tiny)))
    tiny["sweep"].update(mode="grid", instructions=[4, 8], axes={"skew": [1.0, -0.5]})
    with pytest.raises(ConfigError, match=r"sweep point .*'skew': -0.5.*rewrite.skew=-0.5 must be a positive"):
        sweep.check(load_params(write_params(in_tmp / "params.yaml", tiny)))
    tiny["sweep"].update(instructions=[4, 8], axes={}, workers=2, storage="sqlite:///optuna.db")
    with pytest.raises(ConfigError, match="SQLite serves one process"):
        sweep.check(load_params(write_params(in_tmp / "params.yaml", tiny)))
    out = subprocess.run([sys.executable, "-m", "instdiv", "sweep"], cwd=in_tmp, capture_output=True, text=True)
    assert out.returncode == 2 and "journal:" in out.stderr and "Traceback" not in out.stderr
    assert not (in_tmp / "studies").exists() and not (in_tmp / "optuna.db").exists()


TRIALS = Path("reports/sweep/trials.csv")


def run_sweep(path: Path) -> pd.DataFrame:
    """The sweep stage on a params file, as `instdiv sweep` runs it."""
    return sweep.run(load_params(path), TRIALS)


def run_estimate(path: Path) -> dict:
    return estimate.run(load_params(path), TRIALS, Path("reports/sweep"), Path("reports/threshold.json"))


def completed_points(frame: pd.DataFrame, axes=("n_instructions", "seed")) -> list[tuple]:
    done = frame[frame["state"] == "COMPLETE"]
    return sorted(tuple(int(v) for v in row) for row in done[list(axes)].itertuples(index=False))


def test_grid_sweep_with_nested_mlflow_runs(tiny, in_tmp):
    tiny["sweep"].update(mode="grid", instructions=[4, 8, 16], axes={"examples_per_instruction": [5, 10]})
    path = write_params(in_tmp / "params.yaml", tiny)
    frame = run_sweep(path)
    axes = ("n_instructions", "examples_per_instruction", "seed")
    assert completed_points(frame, axes) == [(i, s, 0) for i in (4, 8, 16) for s in (5, 10)]
    assert (in_tmp / "reports/sweep/trials.csv").is_file()

    params = load_params(path)
    study = optuna.load_study(study_name=sweep.study_name(params), storage=sweep.open_storage(params))
    parent = study.user_attrs["mlflow_parent_run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("tests")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 6
    assert client.get_run(parent).info.status == "FINISHED"  # the study's run ends with the sweep
    for run in children:
        trial = study.trials[int(run.data.tags["optuna.trial"])]
        assert run.data.params["rewrite.n_instructions"] == str(trial.params["n_instructions"])
        assert run.data.params["rewrite.examples_per_instruction"] == str(trial.params["examples_per_instruction"])
        assert run.data.params["rewrite.total_examples"] == "None"  # S given: N = I x S
        assert run.data.metrics["test/unseen_op_accuracy"] == trial.user_attrs["unseen_op_accuracy"]
        assert run.data.tags["data.train.sha256"] == trial.user_attrs["data_sha256"]
        # every run is judged on its training rules, and says how unseen its unseen rules are
        assert run.data.tags["test/learned"] == str(trial.user_attrs["learned"]).lower()
        assert 0 <= run.data.metrics["test/unseen_patterns_in_train"] <= 1
    assert set(frame["learned"]) <= {True, False} and "unseen_replacements_in_train" in frame
    # the same command again resumes a finished study: nothing reruns
    assert len(run_sweep(path)) == 6


def record(trial, acc: float) -> float:
    """What a trained trial records, for a synthetic objective: its scores, and that it learned its rules."""
    for key, value in (("unseen_op_accuracy", acc), ("seen_op_accuracy", 0.99), ("unseen_accuracy", acc),
                       ("learned", True)):
        trial.set_user_attr(key, value)
    return acc


def synthetic(midpoint: float):
    """An objective with a known logistic curve in place of training: tests the search, not the model. Seed s
    moves the curve's midpoint by a factor 1.1^(s - 1), so three seeds straddle `midpoint`."""

    def objective(trial, params):
        i = trial.suggest_int("n_instructions", min(params.sweep.instructions), max(params.sweep.instructions),
                              log=True)
        seed = trial.suggest_categorical("seed", params.sweep.seeds)
        acc = 0.9 / (1 + math.exp(-4 * (math.log(i) - math.log(midpoint * 1.1 ** (seed - 1)))))
        return record(trial, acc)

    return objective


def test_threshold_mode_spends_its_runs_near_the_crossing(tiny, in_tmp, monkeypatch):
    monkeypatch.setattr(workers, "objective", synthetic(150.0))
    tiny["sweep"].update(instructions=[16, 1024], seeds=[0, 1, 2], max_trials=15, target=0.5, total_examples=2048)
    path = write_params(in_tmp / "params.yaml", tiny)
    frame = run_sweep(path)
    done = frame[frame["state"] == "COMPLETE"]
    # 5 values of I, each once per seed (the opening trial enqueued the other two)
    assert len(done) == 15 and sorted(done.groupby("n_instructions")["seed"].apply(sorted).tolist()) == [[0, 1, 2]] * 5
    near = done["n_instructions"].drop_duplicates().between(150 / 2.5, 150 * 2.5).sum()
    assert near >= 3  # most points where the curve crosses, not spread evenly over 16-1024
    result = run_estimate(path)
    assert result["threshold_instructions"] == pytest.approx(150, rel=0.05)  # half the 0.9 plateau
    assert result["per_seed"] == {str(s): pytest.approx(150 * 1.1 ** (s - 1), rel=0.05) for s in (0, 1, 2)}
    assert result["ci_low"] < 150 < result["ci_high"] and result["seeds"] == 3
    # the estimate is on the study's MLflow run, which the finished sweep closed
    study_run = optuna.load_study(study_name=sweep.study_name(load_params(path)),
                                  storage=sweep.open_storage(load_params(path))).user_attrs["mlflow_parent_run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    run = client.get_run(study_run)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["estimate/threshold_instructions"] == pytest.approx(result["threshold_instructions"])
    assert {a.path for a in client.list_artifacts(study_run, "estimate")} == {"estimate/threshold.json",
                                                                               "estimate/phase_diagram.png"}

    # optuna-dashboard serves the study from the same storage, on loopback
    port = free_port()
    dashboard = os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")
    server = subprocess.Popen([dashboard, str(in_tmp / "studies/tests.journal"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = json.loads(wait_for(f"http://127.0.0.1:{port}/api/studies"))
        (study,) = body["study_summaries"]
        assert study["study_name"] == sweep.study_name(load_params(path))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=5) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == 15
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_threshold_mode_over_code_programs(tiny, in_tmp, monkeypatch):
    """The threshold search and the estimate on sweep.task: code, through the real objective (nested MLflow
    runs, trial attributes), with a known pass@1 curve over programs in place of training."""

    from instdiv.engine.sweep import trial
    from instdiv.tasks.code.task import CodeTask

    def no_training(p, task, tok, data, logger, ckpt_dir, **kwargs):
        return torch.nn.Identity(), None, {"fit_seconds": 0.0}

    def known_curve(self, model, tok, tables, p, width, device, n_samples=0):
        rate = 0.9 / (1 + math.exp(-4 * (math.log(p.code.n_programs) - math.log(60))))
        return {"pass_at_1": rate, "parse_rate": 1.0}, pd.DataFrame()

    monkeypatch.setattr(trial, "fit", no_training)
    monkeypatch.setattr(CodeTask, "score", known_curve)
    tiny["sweep"].update(task="code", metric="pass_at_1", instructions=[8, 400], max_trials=6, target=0.5)
    path = write_params(in_tmp / "params.yaml", tiny)
    frame = run_sweep(path)
    done = frame[frame["state"] == "COMPLETE"]
    assert len(done) == 6 and done["n_programs"].nunique() == 6 and "n_instructions" not in frame
    assert done["n_programs"].between(60 / 2.5, 60 * 2.5).sum() >= 3
    result = run_estimate(path)
    assert result["threshold_instructions"] == pytest.approx(60, rel=0.05) and result["metric"] == "pass_at_1"


def test_killed_sweep_resumes_and_retries_the_lost_trial(tiny, in_tmp):
    tiny["sweep"].update(mode="grid", instructions=[4, 8, 16], heartbeat_seconds=1)
    tiny["train"].update(max_steps=60)  # long enough to be killed mid-trial
    path = write_params(in_tmp / "params.yaml", tiny)
    storage = sweep.open_storage(load_params(path))
    name = sweep.study_name(load_params(path))
    proc = subprocess.Popen([sys.executable, "-m", "instdiv", "sweep"], cwd=in_tmp, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                states = [t.state for t in optuna.load_study(study_name=name, storage=storage).trials]
            except (KeyError, Exception):
                states = []
            if states.count(optuna.trial.TrialState.COMPLETE) >= 1 and optuna.trial.TrialState.RUNNING in states:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the sweep never reached its second trial")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # as a power cut would: no cleanup, the trial stays RUNNING
        proc.wait()

    out = subprocess.run([sys.executable, "-m", "instdiv", "sweep"], cwd=in_tmp, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(in_tmp / "reports/sweep/trials.csv")
    assert completed_points(frame) == [(4, 0), (8, 0), (16, 0)]  # every point once, none lost
    failed = frame[frame["state"] == "FAIL"]
    assert len(failed) == 1  # the killed trial, recorded
    retry = frame[frame["retry_of"] == failed["number"].iloc[0]]
    assert retry["state"].tolist() == ["COMPLETE"]


def test_two_workers_share_a_postgresql_study_and_an_mlflow_server(tiny, in_tmp, postgres_url, mlflow_server):
    """The several-machines setup on one host: workers share one PostgreSQL study and one MLflow server."""
    tiny["sweep"].update(mode="grid", instructions=[4, 8, 16], seeds=[0, 1], storage=postgres_url,
                         study="pg-workers")
    path = write_params(in_tmp / "params.yaml", tiny)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    out = subprocess.run([sys.executable, "-m", "instdiv", "sweep", "--workers", "2"], cwd=in_tmp, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "database is locked" not in out.stderr
    frame = pd.read_csv(in_tmp / "reports/sweep/trials.csv")
    assert completed_points(frame) == [(i, s) for i in (4, 8, 16) for s in (0, 1)]  # each point once
    assert set(frame["state"]) == {"COMPLETE"}
    assert frame["worker"].nunique() == 2  # both processes took trials
    study = optuna.load_study(study_name=sweep.study_name(load_params(path)), storage=postgres_url)
    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tests")
    parent = study.user_attrs["mlflow_parent_run_id"]
    nested = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["optuna.trial"] for r in nested) == [str(i) for i in range(6)]
    assert not (in_tmp / "mlruns" / "mlflow.db").exists()  # nothing went to the local store
    # a worker started later finds nothing left to do
    again = subprocess.run([sys.executable, "-m", "instdiv", "sweep"], cwd=in_tmp, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(pd.read_csv(in_tmp / "reports/sweep/trials.csv")) == 6


def test_failed_trials_without_a_retry_are_enqueued_again_once():
    study = optuna.create_study()
    dist = {"n_instructions": optuna.distributions.IntDistribution(4, 32, log=True)}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"n_instructions": 8},
                                              distributions=dist))
    sweep.retry_unfinished(study, max_retries=2)
    sweep.retry_unfinished(study, max_retries=2)  # already has its retry: nothing more
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == {"n_instructions": 8}
    assert waiting[0].system_attrs["failed_trial"] == 0


def test_a_crossing_outside_the_range_is_explained(tiny, in_tmp, monkeypatch):
    monkeypatch.setattr(workers, "objective", synthetic(5000.0))  # crosses far above the range
    tiny["sweep"].update(instructions=[16, 1024], total_examples=2048)
    with pytest.raises(InstdivError, match="0.00. at the top of sweep.instructions=.16, 1024.: no plateau.*raise the "
                                           "range's max"):
        run_sweep(write_params(in_tmp / "params.yaml", tiny))
    assert len(pd.read_csv(in_tmp / "reports/sweep/trials.csv")) == 2  # the two ends, kept


def test_pruning_callback_reports_to_the_trial(tiny, in_tmp):
    tiny["sweep"].update(mode="grid", instructions=[4, 8, 16], pruning=True)
    frame = run_sweep(write_params(in_tmp / "params.yaml", tiny))
    study = optuna.load_study(study_name=sweep.study_name(load_params(in_tmp / "params.yaml")),
                              storage=sweep.open_storage(load_params(in_tmp / "params.yaml")))
    # PyTorchLightningPruningCallback reports to Optuna's pruner once per epoch (its granularity): 30 steps
    # of 20 batches an epoch span epochs 0 and 1
    assert all(sorted(t.intermediate_values) == [0, 1] for t in study.trials)
    assert set(frame["state"]) <= {"COMPLETE", "PRUNED"}


class PruneBelow(optuna.pruners.BasePruner):
    """Prunes every trial whose instruction count is below a bound, at its first report: deterministic."""

    def __init__(self, bound: int):
        self.bound = bound

    def prune(self, study, trial) -> bool:
        return trial.params["n_instructions"] < self.bound


def test_a_pruned_grid_finishes_and_is_not_retried(tiny, in_tmp, monkeypatch):
    """Real training with Lightning's pruning callback and a pruner that prunes: the pruned points are results."""
    from instdiv.engine.sweep import study as studies

    monkeypatch.setattr(studies, "pruner", lambda params: PruneBelow(10))
    tiny["sweep"].update(mode="grid", instructions=[4, 8, 16], pruning=True)
    path = write_params(in_tmp / "params.yaml", tiny)
    frame = run_sweep(path)
    states = dict(zip(frame["n_instructions"], frame["state"]))
    assert states == {4: "PRUNED", 8: "PRUNED", 16: "COMPLETE"}
    assert frame.loc[frame["state"] == "PRUNED", "last_validation"].between(0, 1).all()
    assert len(run_sweep(path)) == 3  # run again: finished, nothing retried


def test_a_pruned_threshold_search_never_proposes_the_same_point_again(tiny, in_tmp, monkeypatch):
    from instdiv.engine.sweep import study as studies

    def reporting(trial, params):  # the known curve, reported to the pruner as the callback would
        i = trial.suggest_int("n_instructions", 16, 1024, log=True)
        trial.suggest_categorical("seed", params.sweep.seeds)
        acc = 0.9 / (1 + math.exp(-4 * (math.log(i) - math.log(150.0))))
        trial.report(acc, step=0)
        if trial.should_prune():
            raise optuna.TrialPruned()
        trial.set_user_attr("unseen_op_accuracy", acc)
        return acc

    monkeypatch.setattr(workers, "objective", reporting)
    monkeypatch.setattr(studies, "pruner", lambda params: PruneBelow(30))
    tiny["sweep"].update(instructions=[16, 1024], max_trials=7, target=0.5, total_examples=2048, pruning=True)
    frame = run_sweep(write_params(in_tmp / "params.yaml", tiny))
    assert frame["n_instructions"].is_unique and len(frame) <= 7  # the pruned I=16 was not proposed again
    assert frame.loc[frame["n_instructions"] < 30, "state"].eq("PRUNED").all()
    assert (frame["state"] == "COMPLETE").sum() >= 3


def test_a_killed_journal_worker_has_its_trial_failed_and_retried(tiny, in_tmp):
    """Several workers on one host share a journal file (no heartbeats): the command that started them sees
    one die and fails and retries its trial, so the grid still finishes."""
    tiny["sweep"].update(mode="grid", instructions=[4, 8, 16], storage="journal:optuna.journal", workers=2)
    tiny["train"].update(max_steps=60)  # long enough to be killed mid-trial
    path = write_params(in_tmp / "params.yaml", tiny)
    proc = subprocess.Popen([sys.executable, "-m", "instdiv", "sweep"], cwd=in_tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    name = sweep.study_name(load_params(path))
    killed, deadline = None, time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        try:
            storage = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(in_tmp / "optuna.journal")))
            running = optuna.load_study(study_name=name, storage=storage).get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
        except (KeyError, FileNotFoundError):
            running = []
        for t in running:
            if "worker" in t.user_attrs:
                os.kill(int(t.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)  # a worker, not the command
                killed = t.number
                break
        time.sleep(0.2)
    assert killed is not None, "no trial was ever seen running"
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    frame = pd.read_csv(in_tmp / "reports/sweep/trials.csv")
    assert completed_points(frame) == [(4, 0), (8, 0), (16, 0)]  # every point once, none lost
    assert frame.loc[frame["number"] == killed, "state"].item() == "FAIL"
    assert frame.loc[frame["retry_of"] == killed, "state"].tolist() == ["COMPLETE"]
    assert "its trials" in err and "are retried" in err


def test_the_dashboard_serves_the_storage_params_name(tiny, in_tmp, monkeypatch):
    """`instdiv dashboard` (and so `make dashboard`) opens sweep.storage, here the default: the study's journal
    file in studies/, which a clone elsewhere resumes from."""
    monkeypatch.setattr(workers, "objective", synthetic(150.0))
    tiny["sweep"].update(instructions=[16, 1024], max_trials=3, target=0.5, total_examples=2048, storage=None)
    path = write_params(in_tmp / "params.yaml", tiny)
    run_sweep(path)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "instdiv", "dashboard", "--port", str(port)], cwd=in_tmp,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        (study,) = json.loads(wait_for(f"http://127.0.0.1:{port}/api/studies"))["study_summaries"]
        assert study["study_name"] == sweep.study_name(load_params(path))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert not (in_tmp / "optuna.db").exists()


def test_a_study_resumes_from_its_committed_journal_on_another_machine(tiny, in_tmp, monkeypatch):
    """The sweep's journal (studies/<study>.journal) is all a clone needs: interrupted here, it finishes in
    another directory without this MLflow store, at the same points as an uninterrupted sweep."""
    import shutil

    tiny["sweep"].update(instructions=[16, 1024], seeds=[0, 1], max_trials=10, target=0.5, total_examples=2048)
    ran = []

    def interrupted(trial, params):
        if len(ran) == 5:
            raise KeyboardInterrupt  # Ctrl-C during the sixth run
        ran.append(trial.number)
        return synthetic(150.0)(trial, params)

    monkeypatch.setattr(workers, "objective", interrupted)
    first = in_tmp / "here"
    first.mkdir()
    monkeypatch.chdir(first)
    monkeypatch.setenv("DVC_ROOT", str(first))
    path = write_params(first / "params.yaml", tiny)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(path)

    clone = in_tmp / "elsewhere"  # a clone: params.yaml and the committed journal, no mlruns/
    clone.mkdir()
    shutil.copy(path, clone / "params.yaml")
    shutil.copytree(first / "studies", clone / "studies", ignore=shutil.ignore_patterns("*.lock"))
    monkeypatch.chdir(clone)
    monkeypatch.setenv("DVC_ROOT", str(clone))
    monkeypatch.setattr(workers, "objective", synthetic(150.0))
    resumed = run_sweep(clone / "params.yaml")

    fresh = in_tmp / "uninterrupted"
    fresh.mkdir()
    shutil.copy(path, fresh / "params.yaml")
    monkeypatch.chdir(fresh)
    monkeypatch.setenv("DVC_ROOT", str(fresh))
    reference = run_sweep(fresh / "params.yaml")
    assert completed_points(resumed) == completed_points(reference) and len(completed_points(reference)) == 10
    assert (resumed["state"] == "FAIL").sum() == 1  # the interrupted run, recorded and retried
    # the study got a parent run in this clone's MLflow store, and the estimate lands on it
    monkeypatch.chdir(clone)
    monkeypatch.setenv("DVC_ROOT", str(clone))
    from instdiv.engine.sweep import study as studies

    study_run = studies.parent_run(load_params(clone / "params.yaml"))
    assert study_run is not None
    client = mlflow.MlflowClient(f"sqlite:///{clone}/mlruns/mlflow.db")
    assert client.get_run(study_run).info.status == "FINISHED"
    # run again once finished, it trains nothing and leaves the committed journal as it was
    journals = sorted((clone / "studies").glob("*.journal"))
    before = [j.read_bytes() for j in journals]
    monkeypatch.setattr(workers, "objective", lambda trial, params: pytest.fail("a finished study trained"))
    run_sweep(clone / "params.yaml")
    assert [j.read_bytes() for j in journals] == before


def test_a_journal_moved_to_another_machine_fails_the_other_hosts_running_trials(tmp_path):
    """A journal serves one host: a trial left RUNNING by a machine the committed journal came from can only be
    dead, so it is failed and retried (an RDB storage's heartbeats do that job there)."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.suggest_int("n_instructions", 16, 1024)
    trial.set_user_attr("worker", "a-machine-far-away:4242")
    assert workers.fail_dead_workers(study, 2) == []  # not a journal: another host may be alive
    assert workers.fail_dead_workers(study, 2, journal=True) == [trial.number]
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]  # failed, and retried


def bimodal(i50: float):
    """An objective whose runs memorize or generalize (outcomes mode's model of a run): seed s moves its own
    threshold by a factor 1.25^((s % 5) - 2), so runs at one I near I_50 disagree, as trained ones do."""

    def objective(trial, params):
        s = params.sweep
        i = trial.suggest_int("n_instructions", min(s.instructions), max(s.instructions), log=True)
        seed = trial.suggest_int("seed", 0, 100_000)
        generalized = math.log(i) >= math.log(i50) + math.log(1.25) * ((seed % 5) - 2)
        acc = 0.95 if generalized else 0.01
        return record(trial, acc)

    return objective


def test_outcomes_mode_gathers_runs_in_the_transition_and_resumes_with_a_larger_budget(tiny, in_tmp, monkeypatch):
    monkeypatch.setattr(workers, "objective", bimodal(200.0))
    tiny["sweep"].update(mode="outcomes", instructions=[32, 1024], max_trials=16, total_examples=2048)
    path = write_params(in_tmp / "params.yaml", tiny)
    first = run_sweep(path)
    done = first[first["state"] == "COMPLETE"]
    assert len(done) == 16 and set(done["n_instructions"]) <= set(sweep.ladder_of(load_params(path)))
    # the ends and the middle once, the rest within a factor 2.1 of the truth
    assert {32, 181, 1024} <= set(done["n_instructions"])
    assert done["n_instructions"].between(200 / 2.1, 200 * 2.1).sum() >= 12
    # seeds 0, 1, 2, ... at each I, never one twice
    assert all(sorted(g) == list(range(len(g))) for g in done.groupby("n_instructions")["seed"].apply(list))
    # a larger budget resumes the same study (the budget does not name it) and adds only the new runs
    tiny["sweep"]["max_trials"] = 24
    name = sweep.study_name(load_params(path))
    more = run_sweep(write_params(in_tmp / "params.yaml", tiny))
    assert sweep.study_name(load_params(path)) == name and len(more[more["state"] == "COMPLETE"]) == 24
    assert more.set_index("number").loc[first["number"], "n_instructions"].tolist() == first["n_instructions"].tolist()
    result = estimate.run(load_params(path), TRIALS, Path("reports/sweep"), Path("reports/threshold.json"),
                          coverage_studies=10)
    assert result["mode"] == "outcomes" and result["ci_low"] < 200 * 1.1 and result["ci_high"] > 200 / 1.1
    assert result["threshold_instructions"] == pytest.approx(200, rel=0.3) and result["runs"] == 24
    assert result["coverage"]["studies"] == 10 and 0 <= result["coverage"]["coverage"] <= 1
    assert min(result["transition"].values()) == result["transition_min_runs"] >= 1
    assert Path("reports/sweep/outcomes.png").stat().st_size > 5_000
    assert "I_50" in estimate.headline(result)
