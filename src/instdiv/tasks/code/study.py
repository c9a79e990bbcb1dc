"""The code-generation study's stages: train one model per mix (`code_train@<percent>`) and score it by running
what it writes (`code_eval@<percent>`): pass@1 and parse rate on the held-out programs, and on benchmark files
in HumanEval or MBPP form (`code_model.benchmarks`). The report is report.py.

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
from instdiv.tasks.code import loaders, mix, programs
from instdiv.tasks.code.report import EVALS_DIR
from instdiv.tasks.code.task import TASK, training_params

MODELS_DIR = Path("models/code")


def model_path(percent: int) -> Path:
    return MODELS_DIR / f"general-{percent}.pt"


def read_mix(percent: int) -> pa.Table:
    return datafiles.read(f"general-{percent}", mix.DATA_DIR, None, mix.SCHEMA.names, f"dvc repro mix@{percent}")


def train(params, percent: int) -> dict:
    """The `code_train@<percent>` stage: models/code/general-<percent>.pt and its MLflow run."""
    stages.check_infrastructure(params)
    table, valid = read_mix(percent), programs.read_split("valid")
    manifest = datafiles.read_manifest(programs.DATA_DIR, "dvc repro code_data")
    digests = {"train": datafiles.sha256(mix.DATA_DIR / f"general-{percent}.parquet"),
               "valid": manifest["files"]["valid"]["sha256"]}
    sources = {"train": mix.DATA_DIR / f"general-{percent}.parquet", "valid": programs.DATA_DIR / "valid.parquet"}
    info = stages.train_model(training_params(params), TASK, {"train": table, "valid": valid}, digests, sources,
                              model_path(percent), None, run_name=f"code-general-{percent}",
                              tags={"mix.general_percent": str(percent)},
                              experiment=f"{params.tracking.experiment}-code",
                              extra_params={"mix.percent": percent, "train.rows": table.num_rows})
    return {"percent": percent, **info} if info else {}


def evaluate(params, percent: int) -> dict:
    """pass@1 on the held-out synthetic programs (and the benchmarks); reports/code/evals/general-<percent>.*"""
    stages.check_infrastructure(params, training=False)
    cm, dev = params.code_model, device()
    path = model_path(percent)
    network, extras = models.load(path, dev, f"dvc repro code_train@{percent}")
    tok = stages.tokenizer(params, TASK)
    tables = {"test": programs.read_split("test")}
    metrics, samples = TASK.score(network, tok, tables, params, extras["prompt_width"], dev,
                                  params.evaluate.n_samples)
    metrics = {"general_percent": percent, **{k: v for k, v in metrics.items() if not k.startswith("share_")}}
    for bench in cm.benchmarks:
        problems = loaders.load_benchmark(bench)
        asks = [f"Complete this Python function:\n{p['prompt']}" for p in problems]
        metrics[f"benchmark/{Path(bench).stem}"] = TASK.run_programs(
            network, tok, asks, [p["test"] for p in problems], params, extras["prompt_width"], dev)[0]
    stages.record_evaluation(params, path, metrics, samples, EVALS_DIR / f"general-{percent}.json",
                             EVALS_DIR / f"general-{percent}-samples.csv")
    return metrics
