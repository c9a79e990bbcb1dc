"""A sweep trial, whatever the task: its point becomes settings through the task, then data, one model and
the task's scores, recorded as the trial's value and attributes and in a nested MLflow run."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import optuna

from instdiv.engine import stages, tracking
from instdiv.engine.sweep.study import (
    axis_names,
    check_storage,
    decode,
    encode,
    grid_points,
    ladder_of,
    storage_url,
)
from instdiv.engine.training import device, fit, fit_data
from instdiv.errors import ConfigError


def trial_params(params, point: dict):
    """The full settings of one trial: the task's sections with the point's axes substituted, then the axes
    named `section.key` (model.init: a pretrained base or none) set in their sections."""
    names = axis_names(params)
    values = {k: decode(v) for k, v in point.items() if k in names}
    p = params.task().trial_params(params, {k: v for k, v in values.items() if "." not in k})
    for key, value in values.items():
        if "." in key:
            section, name = key.split(".", 1)
            p = p.replace(**{section: getattr(p, section).replace(**{name: value})})
    # A trial trains on one device: several trials share a machine's GPUs instead (one worker each).
    return p.replace(train=p.train.replace(devices=1, strategy="auto"))


def check(params) -> None:
    """Fail before any training when some point of the sweep is impossible."""
    s = params.sweep
    stages.check_infrastructure(params)
    check_storage(params)
    if s.workers > 1 and storage_url(params).startswith("sqlite"):
        raise ConfigError(f"sweep.workers={s.workers} with a SQLite storage: SQLite serves one process; set "
                          "sweep.storage to journal:optuna.journal (one host) or a postgresql:// URL")
    task = params.task()
    if s.mode == "grid":
        points = grid_points(params)
    elif s.mode == "outcomes":  # every value of the ladder a run may be placed at
        base = {"seed": 0, **{key: encode(values[0]) for key, values in s.axes.items()}}
        points = [{**base, task.count_axis: i} for i in ladder_of(params)]
    else:
        base = {"seed": s.seeds[0], **{key: encode(values[0]) for key, values in s.axes.items()}}
        points = [{**base, task.count_axis: i} for i in s.instructions]
    for point in points:
        try:
            task.check_trial(trial_params(params, point))
        except ConfigError as exc:
            raise ConfigError(f"sweep point {point}: {exc}") from None


def objective(trial: optuna.Trial, params) -> float:
    """Generate, train and score at the trial's point; the value is `sweep.metric`."""
    # First thing: a command that sees this worker die fails its RUNNING trials by this attribute.
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    s, task = params.sweep, params.task()
    point = {task.count_axis: trial.suggest_int(task.count_axis, min(s.instructions), max(s.instructions),
                                                log=True)}
    for key, values in s.axes.items():
        point[key] = trial.suggest_categorical(key, [encode(v) for v in values])
    # outcomes mode gives each run the next unused seed at its I; the others train each point with sweep.seeds
    point["seed"] = trial.suggest_int("seed", 0, 100_000) if s.mode == "outcomes" else \
        trial.suggest_categorical("seed", s.seeds)
    p = trial_params(params, point)
    start = time.time()

    run_id = tracking.child_run(params.tracking, trial.study.user_attrs["mlflow_parent_run_id"],
                                f"trial {trial.number}", {"optuna.study": trial.study.study_name,
                                                          "optuna.trial": str(trial.number)})
    trial.set_user_attr("mlflow_run_id", run_id)
    logger = tracking.logger(params.tracking, run_id=run_id)
    tracking.log_params(logger, {**p.dump(), "optuna.trial": trial.number})
    callbacks = []
    if s.pruning:
        from optuna_integration import PyTorchLightningPruningCallback

        callbacks.append(PyTorchLightningPruningCallback(trial, monitor=f"val/{task.monitor}"))
    with tempfile.TemporaryDirectory(prefix="instdiv-trial-") as tmp:
        tmp = Path(tmp)
        tables = task.trial_tables(p)
        manifest = task.write_trial(tables, p, tmp / "data")  # the same SHA-256 the stage would give
        digest = manifest["files"]["train"]["sha256"]
        tracking.log_datasets(p.tracking, run_id, {"train": tables["train"]}, {"train": digest},
                              {"train": tmp / "data" / "train.parquet"}, task.name)
        tok = stages.tokenizer(p, task)
        data = fit_data(task, tok, p, tables)
        network, _, info = fit(p, task, tok, data, logger, tmp / "checkpoints", callbacks=callbacks, verbose=False)
        dev = device()
        scores, samples = task.score(network.to(dev), tok, tables, p, data.width, dev, p.evaluate.n_samples)
        scores = stages.judged(p, task, scores, manifest.get("overlap", {}))
        samples.to_csv(tmp / "samples.csv", index=False)
        tracking.log_evaluation(params.tracking, run_id, scores, [tmp / "samples.csv"] if len(samples) else [])
    metrics = {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    logger.experiment.set_tag(run_id, "data.train.sha256", digest)
    if "learned" in scores:
        trial.set_user_attr("learned", scores["learned"])
    for key, value in metrics.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("data_sha256", digest)
    trial.set_user_attr("fit_seconds", info["fit_seconds"])
    for key in ("steps_to_learn", "seconds_to_learn"):  # None: never learned on validation
        trial.set_user_attr(key, info.get(key))
    # Settings of the task the trial derived rather than took from its point (e.g. examples per program).
    base, mine = getattr(params, task.name), getattr(p, task.name)
    for key in type(mine).model_fields:
        if key not in point and getattr(mine, key) != getattr(base, key):
            trial.set_user_attr(key, getattr(mine, key))
    shown = [m for m in dict.fromkeys([s.metric, *task.metrics]) if m in metrics][:3]
    print(f"trial {trial.number}: {', '.join(f'{k}={v}' for k, v in point.items())} -> "
          + ", ".join(f"{m.replace('_', ' ')} {metrics[m]:.3f}" for m in shown)
          + ("" if scores.get("learned", True) else " UNTRAINED")
          + f" [{time.time() - start:.0f}s]", flush=True)
    return metrics[s.metric]
