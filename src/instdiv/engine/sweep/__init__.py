"""Optuna sweeps over a task's instruction count I and more axes (S, skew, a general-domain share...):
study and storage (study.py), samplers (samplers.py), the task-generic objective (trial.py), workers and
the sweep stage (workers.py)."""

from instdiv.engine.sweep.samplers import GridQueueSampler, OutcomeSampler, ThresholdSampler, propose
from instdiv.engine.sweep.study import (
                                        at,
                                        axis_names,
                                        dashboard_arg,
                                        decode,
                                        encode,
                                        grid_points,
                                        ladder_of,
                                        open_storage,
                                        open_study,
                                        storage_url,
                                        study_name,
                                        trials_frame,
)
from instdiv.engine.sweep.trial import check, objective, trial_params
from instdiv.engine.sweep.workers import retry_unfinished, run, work

__all__ = ["GridQueueSampler", "OutcomeSampler", "ThresholdSampler", "at", "axis_names", "check", "dashboard_arg", "decode", "encode",
           "grid_points", "ladder_of", "objective", "open_storage", "open_study", "propose", "retry_unfinished", "run",
           "storage_url", "study_name", "trial_params", "trials_frame", "work"]
