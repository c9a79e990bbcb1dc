"""Sweep workers: each runs trials until the study has none left for it; the sweep stage starts them, retries
what failed, writes the trials table and ends the study's MLflow parent run.

Grid mode enqueues every point once, when the study is created; workers pop enqueued trials, which
Optuna's storage hands to exactly one worker each, so no point runs twice even with concurrent workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from instdiv.engine import tracking
from instdiv.engine.sweep.samplers import MIN_PLATEAU, points_so_far, propose, relative_target
from instdiv.engine.sweep.study import (
    adopt,
    at,
    axis_names,
    dashboard_arg,
    grid_points,
    open_storage,
    open_study,
    storage_url,
    study_name,
    trials_frame,
)
from instdiv.engine.sweep.trial import check, objective
from instdiv.errors import InstdivError
from instdiv.params import params_from_dict

log = logging.getLogger(__name__)

def _remaining(study: optuna.Study, params) -> str:
    """'run' when this worker should start a trial, 'wait' when others may still hand work back or, in
    threshold mode, open the next point with their results, or 'done'."""
    s = params.sweep
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    waiting, running = states.count(TrialState.WAITING), states.count(TrialState.RUNNING)
    if waiting:
        return "run"
    heartbeats = not storage_url(params).startswith("journal:")  # RDB storages send heartbeats
    if s.mode == "outcomes":  # the budget counts runs; a failed one is retried in its place, up to a point
        failed = states.count(TrialState.FAIL)
        if sum(st != TrialState.FAIL for st in states) < s.max_trials and failed < s.max_trials * (s.max_retries + 1):
            return "run"
    if s.mode == "threshold":
        axis = params.task().count_axis
        # A point is an I trained once per seed; the budget counts runs (sweep.max_trials).
        points = {t.params[axis] for t in trials if axis in t.params and t.state != TrialState.FAIL}
        failed = states.count(TrialState.FAIL)
        budget_left = (len(points) + 1) * len(s.seeds) <= s.max_trials and \
            failed < s.max_trials * (s.max_retries + 1)
        if budget_left:
            measured, pending = points_so_far(study, s.metric, axis)
            lo, hi = min(s.instructions), max(s.instructions)
            if propose(measured, pending, lo, hi, relative_target(measured, hi, s.target)) is not None:
                return "run"
            if running:  # the next point depends on results still being trained
                return "wait"
    # A running trial may belong to a dead worker: with heartbeats it is failed and retried after the grace
    # period, so wait for it rather than finish with a hole in the sweep.
    return "wait" if running and heartbeats else "done"


def fail_dead_workers(study: optuna.Study, max_retries: int, dead: set[str] | None = None,
                      journal: bool = False) -> list[int]:
    """Fail and retry the RUNNING trials of workers that died without a word (SIGKILL, a power cut): those in
    `dead` ("host:pid"), those of this host whose process is gone and, in a journal (which serves one host:
    a committed journal resumed on another machine), those of any other host. A journal storage has no
    heartbeats, so nothing else would ever end them. Returns the trial numbers failed."""
    host = socket.gethostname()
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        name, _, pid = worker.rpartition(":")
        gone = name == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))
        moved = journal and name != host
        if worker in (dead or set()) or gone or moved:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            retry(study, study._storage.get_trial(t._trial_id))
            failed.append(t.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retry_unfinished(study: optuna.Study, max_retries: int) -> None:
    """Enqueue again the failed trials that have no retry yet (the callback enforces `max_retries`)."""
    trials = study.get_trials(deepcopy=False)
    # a retry lists every trial it stands in for (retry_history), not only the first one (failed_trial)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in retried:
            retry(study, t)


def work(params, threads: int | None = None) -> int:
    """One worker: run trials until the sweep has none left for it; returns how many it ran. `params` is
    the params object, or its plain data (`Params.dump()`) in a worker process."""
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial says it
    if isinstance(params, dict):
        params = params_from_dict(params)
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


def run(params, out: Path) -> pd.DataFrame:
    """The `sweep` stage: start `sweep.workers` workers on the study, then write its trials to `out`; the
    study's MLflow parent run ends FINISHED when every trial it needs is done."""
    check(params)
    s = params.sweep
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log.info("study %s (%s) in %s; optuna-dashboard %s", study_name(params), s.mode,
             storage_url(params).split("://")[0], dashboard_arg(params))
    # Created here once, so the workers below only load it; trials that failed without being retried (a
    # Ctrl-C, a crash of the whole command) are enqueued again first.
    study = open_study(params)
    adopt(study, params)
    # a command killed earlier (here, or on the machine the committed journal comes from) left them RUNNING
    fail_dead_workers(study, s.max_retries, journal=storage_url(params).startswith("journal:"))
    retry_unfinished(study, s.max_retries)
    if s.workers == 1:
        work(params)
    else:
        _run_workers(params, study)
    study = optuna.load_study(study_name=study_name(params), storage=open_storage(params))
    frame = trials_frame(study, axis_names(params))
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    complete = frame[frame["state"] == "COMPLETE"] if len(frame) else frame
    if s.mode == "grid":  # a pruned point is a result too
        complete = frame[frame["state"].isin(["COMPLETE", "PRUNED"])] if len(frame) else frame
        missing = [p for p in grid_points(params) if not at(complete, p).any()]
        if missing:
            raise InstdivError(f"{len(missing)} grid points have no completed trial (first: {missing[0]}); see "
                               "the errors above, then rerun the sweep: failed points are retried")
    elif not len(complete) or complete[params.task().count_axis].nunique() < 3:  # a fit needs 3 values of I
        raise InstdivError(_why_stopped(complete, params))
    tracking.end_run(params.tracking, study.user_attrs["mlflow_parent_run_id"])
    return frame


def _run_workers(params, study: optuna.Study) -> None:
    """`sweep.workers` processes on this host; the trials of one that dies are failed and retried by the rest,
    or by a new round of workers when none is left (at most sweep.max_retries rounds)."""
    s = params.sweep
    threads = max(1, (os.cpu_count() or 1) // s.workers)
    ctx = multiprocessing.get_context("spawn")
    host = socket.gethostname()
    for _ in range(s.max_retries + 1):
        procs = [ctx.Process(target=work, args=(params.dump(), threads)) for _ in range(s.workers)]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = (visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]) \
            if torch.cuda.is_available() else []
        for i, proc in enumerate(procs):
            if gpus:  # one GPU per worker, round robin (a spawned process takes the environment as it starts)
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            proc.start()
        if gpus and visible is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        elif gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        running = list(procs)
        while running:
            for proc in list(running):
                proc.join(timeout=1)
                if proc.exitcode is not None:
                    running.remove(proc)
                    if proc.exitcode:
                        lost = fail_dead_workers(study, s.max_retries, {f"{host}:{proc.pid}"})
                        log.warning("sweep worker %d ended with exit code %s; its trials %s are retried",
                                    proc.pid, proc.exitcode, lost)
        if _remaining(study, params) == "done":
            return


def _why_stopped(complete: pd.DataFrame, params) -> str:
    s, axis = params.sweep, params.task().count_axis
    if len(complete) and s.metric in complete:
        means = complete.groupby(axis)[s.metric].mean()
        top = means.get(max(s.instructions))
        if top is not None and top < MIN_PLATEAU:
            return (f"{s.metric} is {top:.3f} at the top of sweep.instructions={s.instructions}: no plateau to "
                    "measure the threshold against; raise the range's max or the training budget (train.max_steps)")
        if top is not None and (means >= s.target * top).all():
            return (f"{s.metric} is above sweep.target={s.target} x its plateau ({top:.3f}) already at "
                    f"I={min(s.instructions)}: lower the range's min")
    return f"only {len(complete)} trials completed; see the errors above, then rerun the sweep"
