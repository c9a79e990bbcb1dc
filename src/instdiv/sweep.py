"""Optuna sweeps over instruction count I x examples per instruction S x skew a, or, with `sweep.task: code`,
over the number of distinct code programs x the share of general-domain rows in a fixed budget.

Each trial generates the data for its settings, trains and evaluates a model, and records the scores as
the trial's value and user attributes, with a nested MLflow run under one parent run per study. The
engine (storages, samplers, workers, retries, MLflow runs) is the same for both tasks; `TASKS` holds what
differs: how a point becomes data, a model and scores.

- `grid` mode enqueues every point once, when the study is created; workers pop enqueued trials, which
  Optuna's storage hands to exactly one worker each, so no point runs twice even with concurrent workers.
- `threshold` mode asks `ThresholdSampler` for each trial's I: both ends of the range first, then
  bisection of the bracket where the metric crosses the target, then points around the crossing for the
  logistic fit (src/instdiv/estimate.py).

Storages are Optuna's: SQLite for one process, a journal file for several on one host, PostgreSQL (or any
RDB URL) for several machines. With an RDB storage every trial sends heartbeats; a trial whose worker died
is failed after three silent intervals and retried, as are trials that raised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Callable
import multiprocessing
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from instdiv import codetasks, mix, rewrite
from instdiv.config import Params, load_params
from instdiv.errors import ConfigError, InstdivError
from instdiv.tracking import artifact_location, flatten, git_commit, repo_root, tracking_uri

TRIALS_PATH = Path("reports/sweep/trials.csv")
# Heartbeats, stale-trial failing and the retry callback are marked experimental; they are the mechanism.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
_READY_TIMEOUT_S = 300


# ------------------------------------------------------------------------------------------ settings

def storage_url(params: Params) -> str:
    return params.sweep.storage or f"sqlite:///{repo_root() / 'optuna.db'}"


# Rewrite options added after the first studies: left out of the hash while off, so those studies keep
# their names (and their finished trials) across versions.
_LATER_OPTIONS = ("families", "family_k", "occurrences", "test_occurrences", "encrypt")


def study_name(params: Params) -> str:
    """The configured name plus a hash of every setting a trial depends on, so changed settings start a
    new study while an interrupted sweep with the same settings resumes its own."""
    s = params.sweep
    if s.task == "rewrite":
        data = {"rewrite": {k: v for k, v in dataclasses.asdict(params.rewrite).items()
                            if not (k in _LATER_OPTIONS and v in (None, False))}}
    else:
        data = {name: dataclasses.asdict(getattr(params, name)) for name in ("code", "mix", "code_model")}
    # `task` came after the first studies too: left out for rewrite, whose names stay as they were.
    key = {"sweep": {k: v for k, v in dataclasses.asdict(s).items()
                     if k not in ("storage", "workers", "bootstrap", "confidence", "study")
                     and not (k == "task" and v == "rewrite")},
           **data, "model": dataclasses.asdict(params.model),
           "train": {k: v for k, v in dataclasses.asdict(params.train).items()
                     if k not in ("accelerator", "devices", "strategy", "checkpoint_dir")}}
    return f"{s.study}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]}"


def encode(value):
    """An axis value as Optuna stores categorical choices: scalars as they are, [min, max] pairs as JSON."""
    return json.dumps(value) if isinstance(value, list) else value


def decode(value):
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def axis_names(params: Params) -> list[str]:
    return [params.sweep.count_axis, *params.sweep.axes, "seed"]


def trial_params(params: Params, point: dict) -> Params:
    """The full settings of one trial: the base sections with the point's axes substituted."""
    if params.sweep.task == "code":
        return _code_trial_params(params, point)
    r, s = params.rewrite, params.sweep
    changes = {key: decode(point[key]) for key in axis_names(params) if key in point}
    if s.total_examples is not None:
        changes.setdefault("total_examples", s.total_examples)
    if changes.get("total_examples") is not None:
        changes.setdefault("examples_per_instruction", None)
    if changes.get("examples_per_instruction") is not None:
        changes["total_examples"] = None  # S given: N = I x S
    train = dataclasses.replace(params.train, seed=point["seed"], epochs=s.epochs or params.train.epochs)
    return dataclasses.replace(params, rewrite=dataclasses.replace(r, **changes), train=train)


def _code_trial_params(params: Params, point: dict) -> Params:
    """A code trial: `code` with n_programs (and the point's other code axes), `mix` with one general share,
    the code model's training budget. The budget is fixed: unless examples_per_program is an axis, the
    budget is spread evenly over the programs, so fewer programs means more examples of each; a general
    share then replaces code rows, as in the mix stage, rather than drawing other ones."""
    s, m = params.sweep, params.mix
    changes = {key: decode(point[key]) for key in axis_names(params) if key in point}
    percent = changes.pop("general_percent", 0)
    seed = changes.pop("seed")
    total = s.total_examples or m.total_examples
    changes.setdefault("examples_per_program", max(1, math.ceil(total / changes["n_programs"])))
    from instdiv.codetrain import training_params

    p = training_params(params, s.epochs)
    return dataclasses.replace(p, code=dataclasses.replace(params.code, **changes),
                               train=dataclasses.replace(p.train, seed=seed),
                               mix=dataclasses.replace(m, total_examples=total, general_percents=[percent]))


def grid_points(params: Params) -> list[dict]:
    s = params.sweep
    axes = {s.count_axis: sorted(s.instructions),
            **{key: [encode(v) for v in values] for key, values in s.axes.items()}, "seed": s.seeds}
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def check(params: Params) -> None:
    """Fail before any training when some point of the sweep is impossible."""
    s = params.sweep
    if s.workers > 1 and storage_url(params).startswith("sqlite"):
        raise ConfigError(f"sweep.workers={s.workers} with a SQLite storage: SQLite serves one process; set "
                          "sweep.storage to journal:optuna.journal (one host) or a postgresql:// URL")
    if s.mode == "grid":
        points = grid_points(params)
    else:
        base = {"seed": s.seeds[0], **{key: encode(values[0]) for key, values in s.axes.items()}}
        points = [{**base, s.count_axis: i} for i in s.instructions]
    if s.task == "code" and params.mix.code_source is not None:
        raise ConfigError(f"sweep.task=code varies the synthetic code programs, but mix.code_source="
                          f"{params.mix.code_source}; set mix.code_source to null for the sweep")
    for point in points:
        p = trial_params(params, point)
        try:
            if s.task == "code":
                _check_code(p)
            else:
                p.rewrite.validate()
                rewrite.check_feasible(p.rewrite)
        except ConfigError as exc:
            raise ConfigError(f"sweep point {point}: {exc}") from None


def _check_code(p: Params) -> None:
    for section in (p.code, p.mix, p.code_model):
        section.validate()
    codetasks.check_feasible(p.code)
    n_code = mix.counts(p.mix, p.mix.general_percents[0])[1]
    if p.code.n_programs * p.code.examples_per_program < n_code:
        raise ConfigError(f"{p.code.n_programs} programs x code.examples_per_program="
                          f"{p.code.examples_per_program} give fewer than the {n_code} code rows of the budget; "
                          "raise examples_per_program or leave it out of sweep.axes (then the budget sets it)")


def open_storage(params: Params):
    url, s = storage_url(params), params.sweep
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        if not path.is_absolute():
            path = repo_root() / path
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    import sqlalchemy.exc

    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=s.max_retries)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=s.heartbeat_seconds,
                                              grace_period=3 * s.heartbeat_seconds,
                                              heartbeat_stale_trial_callback=retry)
        except sqlalchemy.exc.SQLAlchemyError:
            # Workers started together on a fresh database race to create Optuna's tables; the loser's
            # CREATE fails once the winner's exists, and a second try finds them.
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


# ------------------------------------------------------------------------------------ threshold mode

def propose(measured: dict[int, float], pending: set[int], lo: int, hi: int, target: float,
            min_gap: float = 1.1) -> int | None:
    """The next I to train for locating where the metric crosses `target`, or None when nothing is left.

    `measured` maps I to its mean metric, `pending` holds I being trained. Ends of the range first, then
    the geometric middle of the bracket [largest I below target, smallest I at or above it], then points
    spreading out from the crossing at ratios 1.5, 1.5^2, ... that are not within `min_gap` of a taken one.
    """
    taken = set(measured) | pending
    for end in (hi, lo):
        if end not in taken:
            return end
    above = [i for i, v in measured.items() if v >= target]
    if not above:
        return None  # the crossing lies above the range: sweep.instructions must reach higher
    upper = min(above)
    below = [i for i in measured if i < upper]
    if not below:
        return None  # already at or above the target at the smallest I: lower the range
    center = math.sqrt(max(below) * upper)
    for k in range(0, 16):
        for sign in ((1,) if k == 0 else (1, -1)):
            c = int(round(center * 1.5 ** (sign * k / 2)))
            if lo <= c <= hi and all(max(c, t) / min(c, t) >= min_gap for t in taken):
                return c
    return None


def _points(study: optuna.Study, metric: str, axis: str, exclude: int | None = None) -> tuple[dict, set]:
    values: dict[int, list[float]] = {}
    pending = set()
    for t in study.get_trials(deepcopy=False):
        i = t.params.get(axis)
        if i is None or t.number == exclude:
            continue
        if t.state == TrialState.COMPLETE and metric in t.user_attrs:
            values.setdefault(i, []).append(t.user_attrs[metric])
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            pending.add(i)
    return {i: sum(v) / len(v) for i, v in values.items()}, pending


class GridQueueSampler(optuna.samplers.BaseSampler):
    """Grid mode's sampler: every point is enqueued, so a trial that needs sampling found the queue empty
    (another worker took the last point between our check and our ask); it is pruned, never run."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise optuna.TrialPruned("every grid point is taken")


class ThresholdSampler(optuna.samplers.BaseSampler):
    """Chooses each trial's instruction count with `propose`; every other parameter has one value."""

    def __init__(self, lo: int, hi: int, target: float, metric: str, axis: str):
        self.lo, self.hi, self.target, self.metric, self.axis = lo, hi, target, metric, axis

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name == self.axis:
            measured, pending = _points(study, self.metric, self.axis, exclude=trial.number)
            choice = propose(measured, pending, self.lo, self.hi, self.target)
            # Another worker took the last open point meanwhile: replicate at the current crossing.
            return choice if choice is not None else self.hi if not measured else \
                min(measured, key=lambda i: abs(measured[i] - self.target))
        return param_distribution.choices[0]


# --------------------------------------------------------------------------------------------- study

def open_study(params: Params) -> optuna.Study:
    """Create the study, or load it when it exists; its creator also creates the MLflow parent run and, in
    grid mode, enqueues every point, then marks the study ready for the other workers."""
    s = params.sweep
    storage = open_storage(params)
    name = study_name(params)
    sampler = ThresholdSampler(min(s.instructions), max(s.instructions), s.target, s.metric, s.count_axis) \
        if s.mode == "threshold" else GridQueueSampler()
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        deadline = time.time() + _READY_TIMEOUT_S
        while "ready" not in study.user_attrs:
            if time.time() > deadline:
                raise ConfigError(f"study {name} was created but never set up (its creator died?); delete it "
                                  f"with: optuna delete-study --study-name {name} --storage <url>") from None
            time.sleep(1)
        return study
    for key, value in flatten({"sweep": dataclasses.asdict(s)}).items():
        study.set_user_attr(key, value)
    study.set_user_attr("mlflow_parent_run_id", _parent_run(params, name))
    if s.mode == "grid":
        for point in grid_points(params):
            study.enqueue_trial(point)
    study.set_user_attr("ready", True)
    return study


def _parent_run(params: Params, name: str) -> str:
    import mlflow

    uri = tracking_uri(params.tracking)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(params.tracking.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        params.tracking.experiment, artifact_location=artifact_location(uri, params.tracking.experiment))
    run = client.create_run(exp_id, run_name=f"study {name}",
                            tags={"optuna.study": name, "git_commit": git_commit(), "sweep.mode": params.sweep.mode})
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v))
                                              for k, v in flatten(dataclasses.asdict(params)).items()])
    return run.info.run_id


def objective(trial: optuna.Trial, params: Params) -> float:
    """Generate, train and evaluate at the trial's point; the value is `sweep.metric`."""
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from instdiv.train import MONITOR

    s = params.sweep
    point = {s.count_axis: trial.suggest_int(s.count_axis, min(s.instructions), max(s.instructions), log=True)}
    for key, values in s.axes.items():
        point[key] = trial.suggest_categorical(key, [encode(v) for v in values])
    point["seed"] = trial.suggest_categorical("seed", s.seeds)
    p = trial_params(params, point)
    start = time.time()

    uri = tracking_uri(params.tracking)
    client = mlflow.MlflowClient(uri)
    parent = trial.study.user_attrs["mlflow_parent_run_id"]
    exp_id = client.get_run(parent).info.experiment_id
    run_id = client.create_run(exp_id, run_name=f"trial {trial.number}", tags={
        MLFLOW_PARENT_RUN_ID: parent, "optuna.study": trial.study.study_name,
        "optuna.trial": str(trial.number)}).info.run_id
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    logger = MLFlowLogger(tracking_uri=uri, run_id=run_id)
    logger.log_hyperparams({**flatten(dataclasses.asdict(p)), "optuna.trial": trial.number})
    callbacks = []
    if s.pruning:
        from optuna_integration import PyTorchLightningPruningCallback

        callbacks.append(PyTorchLightningPruningCallback(trial, monitor=MONITOR))
    with tempfile.TemporaryDirectory(prefix="instdiv-trial-") as tmp:
        metrics, info = TASKS[s.task](p, Path(tmp), logger, callbacks)
    client.set_tag(run_id, "data.train.sha256", info["data_sha256"])
    for key, value in metrics.items():
        client.log_metric(run_id, f"test/{key}", value)
        trial.set_user_attr(key, value)
    for key, value in info.items():
        trial.set_user_attr(key, value)
    shown = [s.metric] + [m for m in ("seen_accuracy",) if m in metrics]
    print(f"trial {trial.number}: {_describe(point)} -> "
          + ", ".join(f"{m.replace('_', ' ')} {metrics[m]:.3f}" for m in shown)
          + f" [{time.time() - start:.0f}s]", flush=True)
    return metrics[s.metric]


def rewrite_trial(p: Params, tmp: Path, logger, callbacks: list) -> tuple[dict, dict]:
    """Rules at the point, one model, exact match on every test split."""
    from instdiv.evaluate import score
    from instdiv.train import fit, log_datasets, rewrite_data

    tables = rewrite.generate(p.rewrite)
    manifest = rewrite.write(tables, p.rewrite, tmp / "data")  # the same SHA-256 the stage would give
    digests = {k: v["sha256"] for k, v in manifest["files"].items()}
    log_datasets(logger.run_id, {"train": tables["train"]}, digests, tmp / "data")
    model, info = fit(p, rewrite_data(p, tables), logger, tmp / "checkpoints", callbacks=callbacks, verbose=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics, _ = score(model.to(device), rewrite.test_sets(tables), p.rewrite, 512, device)
    return metrics, {"data_sha256": digests["train"], "fit_seconds": info["fit_seconds"]}


def code_trial(p: Params, tmp: Path, logger, callbacks: list) -> tuple[dict, dict]:
    """Code programs and a general share at the point, one byte-level model, pass@1 on the held-out programs
    (the same rows at every point: codetasks draws them first)."""
    from instdiv import codeeval, codetrain, datafiles, sandbox
    from instdiv.train import fit, log_datasets

    tables = codetasks.generate(p.code)
    table = mix.build(p.mix, p.mix.general_percents[0], codetasks.pairs(tables["train"]))
    about = {"code": dataclasses.asdict(p.code), "mix": dataclasses.asdict(p.mix)}
    digest = datafiles.write({"train": table}, tmp / "data", task="mix", params=about)["files"]["train"]["sha256"]
    log_datasets(logger.run_id, {"train": table}, {"train": digest}, tmp / "data", task="mix")
    data = codetrain.fit_data(p, table, tables["valid"])
    model, info = fit(p, data, logger, tmp / "checkpoints", callbacks=callbacks, verbose=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    test = tables["test"].to_pydict()
    width = data.val[0].tensors[0].size(1)
    programs = codeeval.complete(model.to(device), test["instruction"], width, 64, device)
    scores, results = codeeval.score(programs, test["test"], codeeval.sandbox_limits(p.code_model),
                                     p.code_model.workers)
    codeeval.samples(test, programs, results).to_csv(tmp / "samples.csv", index=False)
    logger.experiment.log_artifact(logger.run_id, str(tmp / "samples.csv"), "evaluation")
    metrics = {k: scores[k] for k in ("pass_at_1", "parse_rate")}
    metrics.update({f"share_{k}": scores["statuses"].get(k, 0) / scores["programs"] for k in sandbox.STATUSES})
    return metrics, {"data_sha256": digest, "fit_seconds": info["fit_seconds"],
                     "examples_per_program": p.code.examples_per_program}


TASKS: dict[str, Callable[[Params, Path, object, list], tuple[dict, dict]]] = {
    "rewrite": rewrite_trial, "code": code_trial}


def _describe(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


# ------------------------------------------------------------------------------------------- workers

def _remaining(study: optuna.Study, params: Params) -> str:
    """'run' when this worker should start a trial, 'wait' when others may still hand work back, or 'done'."""
    s = params.sweep
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    waiting, running = states.count(TrialState.WAITING), states.count(TrialState.RUNNING)
    if waiting:
        return "run"
    heartbeats = not storage_url(params).startswith("journal:")  # RDB storages send heartbeats
    if s.mode == "threshold":
        complete, failed = states.count(TrialState.COMPLETE), states.count(TrialState.FAIL)
        measured, pending = _points(study, s.metric, s.count_axis)
        lo, hi = min(s.instructions), max(s.instructions)
        budget_left = complete + running < s.max_trials and failed < s.max_trials * (s.max_retries + 1)
        if budget_left and propose(measured, pending, lo, hi, s.target) is not None:
            return "run"
    # A running trial may belong to a dead worker: with heartbeats it is failed and retried after the grace
    # period, so wait for it rather than finish with a hole in the sweep.
    return "wait" if running and heartbeats else "done"


def retry_unfinished(study: optuna.Study, max_retries: int) -> None:
    """Enqueue again the failed trials that have no retry yet (the callback enforces `max_retries`)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in retried:
            retry(study, t)


def work(params_path: str, worker: int = 0, threads: int | None = None) -> int:
    """One worker: run trials until the sweep has none left for it; returns how many it ran."""
    if threads:
        torch.set_num_threads(threads)
    params = load_params(params_path)
    study = open_study(params)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=params.sweep.max_retries)

    def retry_failed(study, trial):
        if trial.state == TrialState.FAIL:
            retry(study, trial)

    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        todo = _remaining(study, params)
        if todo == "done":
            return ran
        if todo == "wait":
            time.sleep(min(params.sweep.heartbeat_seconds, 10))
            continue
        study.optimize(lambda t: objective(t, params), n_trials=1, catch=(Exception,), callbacks=[retry_failed],
                       gc_after_trial=True)
        ran += 1


def run(params_path: str | Path, out: Path = TRIALS_PATH) -> pd.DataFrame:
    """The `sweep` stage: start `sweep.workers` workers on the study, then write its trials to `out`."""
    params = load_params(params_path)
    check(params)
    s = params.sweep
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"study {study_name(params)} ({s.mode}) in {storage_url(params).split('://')[0]}; "
          f"optuna-dashboard {_dashboard_arg(params)}", flush=True)
    # Created here once, so the workers below only load it; trials that failed without being retried (a
    # Ctrl-C, a crash of the whole command) are enqueued again first.
    retry_unfinished(open_study(params), s.max_retries)
    if s.workers == 1:
        work(str(params_path))
    else:
        threads = max(1, (os.cpu_count() or 1) // s.workers)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=work, args=(str(params_path), i, threads)) for i in range(s.workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        if any(proc.exitcode for proc in procs):
            raise RuntimeError(f"a sweep worker failed (exit codes {[p.exitcode for p in procs]})")
    study = optuna.load_study(study_name=study_name(params), storage=open_storage(params))
    frame = trials_frame(study, axis_names(params))
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    complete = frame[frame["state"] == "COMPLETE"] if len(frame) else frame
    if s.mode == "grid":
        missing = [p for p in grid_points(params)
                   if not ((complete[list(p)] == pd.Series(p)).all(axis=1)).any()]
        if missing:
            raise InstdivError(f"{len(missing)} grid points have no completed trial (first: {missing[0]}); see "
                               "the errors above, then rerun the sweep: failed points are retried")
    elif len(complete) < 3:
        raise InstdivError(_why_stopped(complete, params))
    return frame


def _why_stopped(complete: pd.DataFrame, params: Params) -> str:
    s = params.sweep
    if len(complete) and s.metric in complete:
        best = complete.loc[complete[s.metric].idxmax()]
        if (complete[s.metric] < s.target).all():
            return (f"{s.metric} stays below sweep.target={s.target} over sweep.instructions={s.instructions} "
                    f"(best {best[s.metric]:.3f} at I={best[s.count_axis]}): raise the range's max, the "
                    "training budget (sweep.epochs) or lower sweep.target")
        if (complete[s.metric] >= s.target).all():
            return (f"{s.metric} is above sweep.target={s.target} already at I={min(s.instructions)}: lower the "
                    "range's min or raise sweep.target")
    return f"only {len(complete)} trials completed; see the errors above, then rerun the sweep"


def _dashboard_arg(params: Params) -> str:
    url = storage_url(params)
    return url.removeprefix("journal:") if url.startswith("journal:") else url


def trials_frame(study: optuna.Study, axes: list[str]) -> pd.DataFrame:
    """One row per trial: state, axes, accuracies, the MLflow run; what the estimate stage reads."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, **{a: t.params.get(a) for a in axes},
               "retry_of": t.system_attrs.get("failed_trial")}
        row.update({k: v for k, v in t.user_attrs.items()})
        rows.append(row)
    return pd.DataFrame(rows)
