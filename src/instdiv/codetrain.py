"""Train one GPT per code-instruction mix (stage `code_train@<percent>`), tracked in MLflow.

Text is one token per byte; a row is `instruction \n### Response:\n response EOS`, the loss on the
response only. Validation (and the choice of checkpoint) is greedy exact match on the synthetic code tasks'
validation programs, whose structures never occur in training.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import torch
from torch.utils.data import TensorDataset

from instdiv import codetasks, datafiles, mix, tokenizer as tok
from instdiv.config import Params
from instdiv.errors import ConfigError
from instdiv.evaluate import EvalSet
from instdiv.model import GPTConfig
from instdiv.tracking import artifact_location, flatten, git_commit, tracking_uri
from instdiv.train import FitData, fit

MODELS_DIR = Path("models/code")
MAX_BLOCK = 4096  # bytes per row: beyond this a byte-level GPT on one machine is not what you want


def model_path(percent: int) -> Path:
    return MODELS_DIR / f"general-{percent}.pt"


def read_mix(percent: int) -> pa.Table:
    return datafiles.read(f"general-{percent}", mix.DATA_DIR, None, mix.SCHEMA.names, f"mix@{percent}")


def shape(instructions: list[str], responses: list[str]) -> tuple[int, int]:
    """(prompt width, block size) in bytes for these rows: the longest prompt, and prompt + response."""
    width = max(tok.byte_length(tok.text_prompt(i)) for i in instructions)
    longest = max(tok.byte_length(r) for r in responses)
    block = width + longest + 1
    if block > MAX_BLOCK:
        raise ConfigError(f"code rows up to {block} bytes exceed {MAX_BLOCK}; filter the long ones out of "
                          "mix.code_source / mix.general_source first")
    return width, block


def fit_data(params: Params, train: pa.Table, valid: pa.Table) -> FitData:
    instructions, responses = train.column("instruction").to_pylist(), train.column("response").to_pylist()
    v_instr, v_target = valid.column("instruction").to_pylist(), valid.column("target").to_pylist()
    width, block = shape(instructions + v_instr, responses + v_target)
    x, y = tok.training_tensors([tok.text_prompt(i) for i in instructions], responses, block, tok.encode_bytes)
    val = EvalSet.from_texts([tok.text_prompt(i) for i in v_instr], v_target, width, block - width + 1,
                             encoder=tok.encode_bytes)
    # uint8 holds no byte token above 255; int16 does, and keeps 10^5 rows of a few hundred tokens small.
    return FitData(TensorDataset(x.to(torch.int16), y.to(torch.int16)), [TensorDataset(*val.tensors())],
                   ("unseen",), GPTConfig.from_params(params.model, tok.BYTE_VOCAB_SIZE, block))


def training_params(params: Params, epochs: float | None = None) -> Params:
    """`train` with the code model's budget (code_model.epochs, or `epochs`) and batch size."""
    cm = params.code_model
    return dataclasses.replace(params, train=dataclasses.replace(
        params.train, epochs=epochs or cm.epochs, max_steps=None, batch_size=cm.batch_size))


def train(params: Params, percent: int) -> dict:
    """The `code_train@<percent>` stage: models/code/general-<percent>.pt and its MLflow run."""
    from lightning.pytorch.loggers import MLFlowLogger

    params.code_model.validate()
    table, valid = read_mix(percent), codetasks.read_split("valid")
    p = training_params(params)
    data = fit_data(p, table, valid)
    uri = tracking_uri(params.tracking)
    experiment = f"{params.tracking.experiment}-code"
    digest = datafiles.sha256(mix.DATA_DIR / f"general-{percent}.parquet")
    logger = MLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_name=f"code-general-{percent}",
                          artifact_location=artifact_location(uri, experiment),
                          tags={"git_commit": git_commit(), "mix.general_percent": str(percent),
                                "data.train.sha256": digest})
    logger.log_hyperparams({**flatten({k: dataclasses.asdict(getattr(p, k))
                                       for k in ("code", "mix", "code_model", "model", "train")}),
                            "mix.percent": percent, "train.rows": table.num_rows})
    ckpt_dir = Path(p.train.checkpoint_dir) / f"code-general-{percent}-{digest[:12]}"
    best, info = fit(p, data, logger, ckpt_dir)
    if best is None:
        return {}
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dataclasses.asdict(best.cfg), "state_dict": best.state_dict(),
                "prompt_width": data.val[0].tensors[0].size(1)}, model_path(percent))
    info = {"run_id": logger.run_id, "percent": percent, **info}
    model_path(percent).with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info
