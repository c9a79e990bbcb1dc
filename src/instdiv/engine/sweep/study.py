"""A sweep's study: its storage, its name (hashed from every setting a trial depends on), its points, its
creation (with the MLflow parent run and, in grid mode, every point enqueued) and its trials as a table.

Storages are Optuna's. The default is a journal file per study name, `studies/<sweep.study>.journal`, committed
with the reports: it serves several worker processes on one host, and a clone on another machine resumes
the study from it (optuna-dashboard opens it as it is). PostgreSQL (or any RDB URL) serves several machines. With an RDB storage every trial sends heartbeats; a trial whose worker died
is failed after three silent intervals and retried, as are trials that raised.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd

from instdiv.config import Section
from instdiv.engine import tracking
from instdiv.engine.sweep.samplers import GridQueueSampler, OutcomeSampler, ThresholdSampler
from instdiv.errors import ConfigError

# Heartbeats, stale-trial failing and the retry callback are marked experimental; they are the mechanism.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
_READY_TIMEOUT_S = 300


STUDIES_DIR = "studies"


def storage_url(params) -> str:
    """sweep.storage, or the study's journal file (a path from the repository root)."""
    return params.sweep.storage or f"journal:{STUDIES_DIR}/{params.sweep.study}.journal"


def dashboard_arg(params) -> str:
    """What optuna-dashboard takes: the URL, or the journal file's path."""
    url = storage_url(params)
    return url.removeprefix("journal:") if url.startswith("journal:") else url


def _settings(section: Section) -> dict:
    """A section as study names hash it: keys added after the first studies are left out while at their
    default (each section lists them in LATER_KEYS), so those studies keep their names across versions."""
    later = getattr(type(section), "LATER_KEYS", ())
    fields = type(section).model_fields
    return {k: v for k, v in section.model_dump().items() if not (k in later and v == fields[k].default)}


def study_name(params) -> str:
    """The configured name plus a hash of every setting a trial depends on, so changed settings start a
    new study while an interrupted sweep with the same settings resumes its own."""
    s = params.sweep
    # In outcomes mode the budget only says how far to go (raising it resumes the study) and seeds are assigned
    # run by run, so neither names the study.
    ignored = ("storage", "workers", "bootstrap", "confidence", "study") + \
        (("max_trials", "seeds") if s.mode == "outcomes" else ())
    settings = _settings(s)
    if s.mode == "grid":  # a grid runs every point whatever the budget: named at the budget's old default
        settings["max_trials"] = 12
    key = {"sweep": {k: v for k, v in settings.items() if k not in ignored},
           **{name: _settings(getattr(params, name)) for name in params.task().sections},
           "model": _settings(params.model),
           "train": {k: v for k, v in _settings(params.train).items() if k not in params.train.PLACEMENT}}
    return f"{s.study}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]}"


def encode(value):
    """An axis value as Optuna stores categorical choices: scalars as they are, lists as JSON."""
    return json.dumps(value) if isinstance(value, list) else value


def decode(value):
    """The axis value an encoded one stands for; an empty cell read back from a table (NaN) is a null axis
    value (model.init: null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def at(frame: pd.DataFrame, point: dict) -> pd.Series:
    """Rows of a trials table (as run or read back from trials.csv) at the point's axis values, encoded or not:
    numbers compared as numbers, lists as their JSON, a null value (model.init: null) as the empty cell."""
    keep = pd.Series(True, index=frame.index)
    for key, value in point.items():
        value = decode(value)
        if value is None:
            keep &= frame[key].isna()
        elif isinstance(value, (int, float)):
            keep &= pd.to_numeric(frame[key], errors="coerce") == value
        else:
            keep &= frame[key].astype(str) == str(encode(value))
    return keep


def ladder_of(params) -> list[int]:
    """Outcomes mode's values of I: sweep.instructions [min, max], sweep.ladder_ratio apart at most."""
    from instdiv.engine.stats import ladder

    return ladder(min(params.sweep.instructions), max(params.sweep.instructions), params.sweep.ladder_ratio)


def axis_names(params) -> list[str]:
    return [params.task().count_axis, *params.sweep.axes, "seed"]


def grid_points(params) -> list[dict]:
    s = params.sweep
    axes = {params.task().count_axis: sorted(s.instructions),
            **{key: [encode(v) for v in values] for key, values in s.axes.items()}, "seed": s.seeds}
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def check_storage(params, seconds: int = 3) -> None:
    """Fail in seconds, with one line, when sweep.storage cannot be used: an unknown scheme, a server that
    does not answer, a folder that does not exist. (A SQLite file is not created here.)"""
    import sqlalchemy
    import sqlalchemy.exc

    url = storage_url(params)
    key = f"sweep.storage={url}" if params.sweep.storage else f"the default storage {url}"
    if url.startswith("journal:") or url.startswith("sqlite:///"):
        path = Path(url.removeprefix("journal:").removeprefix("sqlite:///"))
        # a journal path is taken from the repository root (open_storage), a SQLite one from here (SQLAlchemy)
        folder = (path if path.is_absolute() or url.startswith("sqlite") else tracking.repo_root() / path).parent
        # the default's folder (studies/) is made with the study, not by a check
        if not folder.is_dir() and params.sweep.storage:
            raise ConfigError(f"{key}: the folder {folder} does not exist; create it or fix sweep.storage")
        return
    timeout = {"connect_timeout": seconds} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=timeout)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"{key}: not a storage Optuna can open ({exc}); use sqlite:///FILE, journal:FILE (one "
                          "host) or postgresql://USER@HOST/DB (several machines)") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        raise ConfigError(f"{key}: the database did not answer within {seconds} s ({first}); start it or fix "
                          "sweep.storage") from None
    finally:
        engine.dispose()


def open_storage(params):
    url, s = storage_url(params), params.sweep
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        if not path.is_absolute():
            path = tracking.repo_root() / path
        if not s.storage:
            path.parent.mkdir(parents=True, exist_ok=True)
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


def pruner(params) -> optuna.pruners.BasePruner:
    """sweep.pruning: stop a trial whose validation score lags the others' at the same epoch (a pruned
    trial is a result: recorded as PRUNED, never retried or proposed again)."""
    return optuna.pruners.MedianPruner() if params.sweep.pruning else optuna.pruners.NopPruner()


def _load_ready(name: str, storage, sampler, params) -> optuna.Study:
    """An existing study, once its creator has set it up."""
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner(params))
    deadline = time.time() + _READY_TIMEOUT_S
    while "ready" not in study.user_attrs:
        if time.time() > deadline:
            raise ConfigError(f"study {name} was created but never set up (its creator died?); delete it "
                              f"with: optuna delete-study --study-name {name} --storage <url>")
        time.sleep(1)
    return study


def open_study(params) -> optuna.Study:
    """Create the study, or load it when it exists; its creator also creates the MLflow parent run and, in
    grid mode, enqueues every point, then marks the study ready for the other workers."""
    s = params.sweep
    storage = open_storage(params)
    name = study_name(params)
    fixed = {key: encode(values[0]) for key, values in s.axes.items()}
    task = params.task()
    if s.mode == "threshold":
        sampler = ThresholdSampler(min(s.instructions), max(s.instructions), s.target, s.metric, task.count_axis,
                                   s.seeds, fixed)
    elif s.mode == "outcomes":
        sampler = OutcomeSampler(ladder_of(params), s.target, s.metric, task.seen_metric, task.count_axis)
    else:
        sampler = GridQueueSampler()
    # Loaded first: a create attempt on an existing study appends a record to a journal file, so every resume
    # would change the committed journal without changing the study.
    if name in optuna.get_all_study_names(storage):
        return _load_ready(name, storage, sampler, params)
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner(params),
                                    direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it first
        return _load_ready(name, storage, sampler, params)
    # the study's settings and the recipe its runs train with (optuna-dashboard shows them; reports read them)
    recipe = {"train": params.train.model_dump(exclude=set(params.train.PLACEMENT)), "model": params.model.model_dump()}
    for key, value in tracking.flatten({"sweep": s.model_dump(), **recipe}).items():
        study.set_user_attr(key, value)
    _new_parent_run(study, params)
    if s.mode == "grid":
        for point in grid_points(params):
            study.enqueue_trial(point)
    study.set_user_attr("ready", True)
    return study


def _new_parent_run(study: optuna.Study, params) -> str:
    name = study.study_name
    parent = tracking.parent_run(params.tracking, f"study {name}",
                                 {"optuna.study": name, "sweep.mode": params.sweep.mode}, params.dump())
    study.set_user_attr("mlflow_parent_run_id", parent)
    return parent


def adopt(study: optuna.Study, params) -> None:
    """A study resumed from a committed journal on another machine names a parent run this MLflow store does
    not hold: give it a new one (the trials run here nest under it; earlier ones stay in the journal)."""
    if not tracking.run_exists(params.tracking, study.user_attrs.get("mlflow_parent_run_id")):
        _new_parent_run(study, params)


def parent_run(params) -> str | None:
    """The MLflow run of the sweep's study, if the study exists in sweep.storage (never creates one)."""
    url = storage_url(params)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    if url.startswith("journal:") and not (tracking.repo_root() / url.removeprefix("journal:")).is_file():
        return None
    try:
        study = optuna.load_study(study_name=study_name(params), storage=open_storage(params))
    except KeyError:
        return None
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    return run_id if tracking.run_exists(params.tracking, run_id) else None


def trials_frame(study: optuna.Study, axes: list[str]) -> pd.DataFrame:
    """One row per trial: state, axes, scores, the MLflow run; what the estimate stage reads. A pruned trial
    shows its last validation score (`last_validation`)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, **{a: t.params.get(a) for a in axes},
               "retry_of": t.system_attrs.get("failed_trial")}
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            row["last_validation"] = t.intermediate_values[max(t.intermediate_values)]
        row.update({k: v for k, v in t.user_attrs.items()})
        rows.append(row)
    return pd.DataFrame(rows)
