"""The code-generation study's stages: train one model per mix and seed (`code_train@<percent>-<seed>`) and score
it by running what it writes (`code_eval@<percent>-<seed>`): pass@1 and parse rate on the held-out programs and
on as many of its own training programs, and on benchmark files in HumanEval or MBPP form
(`code_model.benchmarks`). The report is report.py.

Text is one token per byte; a row is `instruction \\n### Response:\\n response EOS`, the loss on the response
only. Validation (and the choice of checkpoint) is greedy exact match on the validation programs, whose
structures never occur in training.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from instdiv.engine import data as datafiles
from instdiv.engine import model as models
from instdiv.engine import stages
from instdiv.engine.training import device
from instdiv.tasks.code import mix, programs
from instdiv.tasks.code.report import EVALS_DIR
from instdiv.tasks.code.task import TASK, training_params

MODELS_DIR = Path("models/code")


def name(percent: int, seed: int) -> str:
    return f"general-{percent}-seed{seed}"


def model_path(percent: int, seed: int) -> Path:
    return MODELS_DIR / f"{name(percent, seed)}.pt"


def read_mix(percent: int) -> pa.Table:
    return datafiles.read(f"general-{percent}", mix.DATA_DIR, None, mix.SCHEMA.names, f"dvc repro mix@{percent}")


def train(params, percent: int, seed: int) -> dict:
    """The `code_train@<percent>-<seed>` stage: models/code/general-<percent>-seed<seed>.pt and its MLflow run."""
    stages.check_infrastructure(params)
    table, valid = read_mix(percent), programs.read_split("valid")
    manifest = datafiles.read_manifest(programs.DATA_DIR, "dvc repro code_data")
    digests = {"train": datafiles.sha256(mix.DATA_DIR / f"general-{percent}.parquet"),
               "valid": manifest["files"]["valid"]["sha256"]}
    sources = {"train": mix.DATA_DIR / f"general-{percent}.parquet", "valid": programs.DATA_DIR / "valid.parquet"}
    p = training_params(params)
    p = p.replace(train=p.train.replace(seed=seed))
    info = stages.train_model(p, TASK, {"train": table, "valid": valid}, digests, sources,
                              model_path(percent, seed), None, run_name=f"code-{name(percent, seed)}",
                              tags={"mix.general_percent": str(percent), "seed": str(seed)},
                              experiment=f"{params.tracking.experiment}-code",
                              extra_params={"mix.percent": percent, "train.rows": table.num_rows})
    return {"percent": percent, "seed": seed, **info} if info else {}


def evaluate(params, percent: int, seed: int) -> dict:
    """pass@1 on the held-out synthetic programs, on its own training programs (and the benchmarks):
    reports/code/evals/general-<percent>-seed<seed>.*"""
    stages.check_infrastructure(params, training=False)
    dev = device()
    path = model_path(percent, seed)
    network, extras = models.load(path, dev, f"dvc repro experiments/dvc.yaml:code_train@{percent}-{seed}")
    tok = stages.tokenizer(params, TASK)
    tables = {"test": programs.read_split("test"), "train_programs": programs.read_split("train")}
    metrics, samples = TASK.score(network, tok, tables, params, extras["prompt_width"], dev,
                                  params.evaluate.n_samples)
    metrics = stages.judged(params, TASK, {"general_percent": percent, "seed": seed,
                                           **{k: v for k, v in metrics.items() if not k.startswith("share_")}}, {})
    stages.record_evaluation(params, path, metrics, samples, EVALS_DIR / f"{name(percent, seed)}.json",
                             EVALS_DIR / f"{name(percent, seed)}-samples.csv")
    return metrics
