"""Every wrong or impossible setting, and every missing or corrupt file, stops with one message that names
the parameter or file and the fix: no traceback, before any long work, nothing produced is lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from instdiv.params import load_params, params_from_dict
from instdiv.errors import ConfigError

from conftest import write_params


def with_(tiny, section, key, value):
    tiny[section][key] = value
    return tiny


@pytest.mark.parametrize("section,key,value,message", [
    ("rewrite", "n_instructions", 0, "rewrite.n_instructions=0 must be positive"),
    ("rewrite", "total_examples", -5, "rewrite.total_examples=-5 must be positive"),
    ("rewrite", "n_unseen_instructions", 0, "rewrite.n_unseen_instructions=0 must be positive"),
    ("rewrite", "input_length", 0, "rewrite.input_length=0 must be positive"),
    ("rewrite", "noop_share", 1.5, r"rewrite.noop_share=1.5 is outside \[0, 1\]"),
    ("rewrite", "noop_share", -0.1, r"rewrite.noop_share=-0.1 is outside \[0, 1\]"),
    ("rewrite", "pattern_length", 7, "pattern_length=7 is longer than rewrite.input_length=6"),
    ("rewrite", "pattern_length", [3, 2], "min <= max"),
    ("rewrite", "alphabet_size", 27, "between 1 and 26"),
    ("rewrite", "skew", 0, "rewrite.skew=0 must be a positive exponent"),
    ("rewrite", "pattern_length", [1, 2, 3], r"give one length or a \[min, max\] pair"),
    ("rewrite", "holdout", "rules", "rewrite.holdout='rules' has the wrong type: expected one of 'pairs', 'patterns', 'strings'"),
    ("rewrite", "examples_per_instruction", 10, "exactly one of examples_per_instruction"),
    ("rewrite", "total_examples", 10, "every instruction needs at least one example"),
    ("rewrite", "seed", "zero", "rewrite.seed='zero' has the wrong type: expected int"),
    ("model", "d_model", 33, "not divisible by model.n_head"),
    ("model", "dropout", 1.0, "model.dropout"),
    ("train", "lr", 0, "train.lr=0 must be a positive number"),
    ("train", "batch_size", 0, "train.batch_size=0 must be positive"),
    ("train", "warmup_frac", 1.2, "train.warmup_frac"),
    ("train", "precision", "fp8", "train.precision='fp8' has the wrong type"),
    ("evaluate", "batch_size", -1, "evaluate.batch_size=-1 must be positive"),
])
def test_wrong_parameter_names_key(tiny, section, key, value, message):
    with pytest.raises(ConfigError, match=message):
        params_from_dict(with_(tiny, section, key, value))


def test_unknown_key_suggests_the_right_one(tiny):
    tiny["rewrite"]["n_instruction"] = tiny["rewrite"].pop("n_instructions")
    with pytest.raises(ConfigError, match="unknown key 'n_instruction'; did you mean 'n_instructions'"):
        params_from_dict(tiny)


def test_missing_keys_and_sections_take_their_defaults(tiny):
    """Older params files keep working when a parameter is added: what is left out takes the default."""
    del tiny["train"]["lr"], tiny["model"], tiny["rewrite"]["encrypt"]
    p = params_from_dict(tiny)
    assert p.train.lr == 3e-3 and p.model.kind == "gpt" and p.model.d_model == 64 and p.rewrite.encrypt is False
    assert p.train.batch_size == tiny["train"]["batch_size"]  # what is given still counts
    assert params_from_dict({}).rewrite.n_instructions == 512


def test_unknown_section_and_model_kind(tiny):
    tiny["rewrites"] = tiny.pop("rewrite")
    with pytest.raises(ConfigError, match="unknown key 'rewrites'; did you mean 'rewrite'"):
        params_from_dict(tiny)
    tiny["rewrite"] = tiny.pop("rewrites")
    tiny["model"]["kind"] = "llama"
    with pytest.raises(ConfigError, match="model.kind: unknown model kind 'llama'; known: gpt"):
        params_from_dict(tiny)


def test_missing_and_broken_params_file(tmp_path):
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("rewrite: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "instdiv", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_too_many_rules_stop_the_generate_stage(tiny, in_tmp):
    tiny["rewrite"].update(alphabet_size=2, pattern_length=2, replacement_length=2)  # 4 x 4 - 4 = 12 rules
    write_params(in_tmp / "params.yaml", tiny)
    out = run_cli("generate", cwd=in_tmp)
    assert out.returncode == 2
    assert "allow only 12" in out.stderr and "lower rewrite.n_instructions" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (in_tmp / "data").exists()


def test_missing_and_corrupt_data_files_are_named(tiny, in_tmp):
    write_params(in_tmp / "params.yaml", tiny)
    out = run_cli("train", cwd=in_tmp)
    assert out.returncode == 2 and "data/rewrite/manifest.json not found" in out.stderr
    assert "dvc repro generate" in out.stderr and "Traceback" not in out.stderr

    assert run_cli("generate", cwd=in_tmp).returncode == 0
    train = in_tmp / "data/rewrite/train.parquet"
    train.write_bytes(train.read_bytes()[:200])  # truncated, as by a full disk
    out = run_cli("train", cwd=in_tmp)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "data/rewrite/train.parquet does not match the SHA-256" in out.stderr
    assert not (in_tmp / "models").exists()  # stopped before training

    (in_tmp / "data/rewrite/test_unseen.parquet").unlink()
    out = run_cli("evaluate", cwd=in_tmp)
    assert out.returncode == 2 and "data/rewrite/test_unseen.parquet not found" in out.stderr


def test_unreadable_parquet_is_named(tiny, in_tmp):
    from pathlib import Path

    from instdiv.engine import data as datafiles
    from instdiv.errors import DataError

    write_params(in_tmp / "params.yaml", tiny)
    assert run_cli("generate", cwd=in_tmp).returncode == 0
    (in_tmp / "data/rewrite/valid_seen.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="valid_seen.parquet is not a readable Parquet file"):
        datafiles.read("valid_seen", Path("data/rewrite"), None, (), "dvc repro generate")  # no SHA-256 check


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def fails_fast(args, cwd, env=None, seconds: float = 60):
    """The command exits 2 within `seconds` with one line and no traceback, having built nothing.

    `seconds` is loose on purpose: on a loaded 2-core machine importing torch, Lightning and MLflow alone
    took 16 s once. What it catches is a client left to its own retries (MLflow's HTTP back-off, a database
    driver with no connect timeout), which takes minutes; "built nothing" is the check that matters.
    """
    import os
    import time

    start = time.time()
    out = subprocess.run([sys.executable, "-m", "instdiv", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=120, env={**os.environ, **(env or {})})
    assert out.returncode == 2, out.stderr[-2000:]
    assert time.time() - start < seconds and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (cwd / "models").exists() and not (cwd / "studies").exists()
    return out.stderr


def test_absent_infrastructure_gets_one_line_within_seconds(tiny, in_tmp):
    """A GPU, an Optuna storage or an MLflow server named in params (or the environment) that is not there."""
    import torch

    write_params(in_tmp / "params.yaml", tiny)
    assert run_cli("generate", cwd=in_tmp).returncode == 0
    dead = f"http://127.0.0.1:{closed_port()}"
    err = fails_fast(["train"], in_tmp, {"MLFLOW_TRACKING_URI": dead})
    assert f"MLFLOW_TRACKING_URI={dead}: the MLflow server did not answer" in err
    tiny["tracking"]["uri"] = dead
    write_params(in_tmp / "params.yaml", tiny)
    assert f"tracking.uri={dead}" in fails_fast(["sweep"], in_tmp)
    tiny["tracking"]["uri"] = "./mlruns"
    write_params(in_tmp / "params.yaml", tiny)
    assert "MLflow 3 refuses a file store" in fails_fast(["evaluate"], in_tmp)
    tiny["tracking"]["uri"] = None

    tiny["sweep"]["storage"] = "mongodb://127.0.0.1/optuna"
    write_params(in_tmp / "params.yaml", tiny)
    assert "sweep.storage=mongodb://127.0.0.1/optuna: not a storage Optuna can open" in fails_fast(["sweep"], in_tmp)
    tiny["sweep"]["storage"] = f"postgresql://postgres@127.0.0.1:{closed_port()}/optuna"
    write_params(in_tmp / "params.yaml", tiny)
    assert "the database did not answer" in fails_fast(["sweep"], in_tmp)
    tiny["sweep"]["storage"] = "journal:no/such/folder/optuna.journal"
    write_params(in_tmp / "params.yaml", tiny)
    assert "does not exist" in fails_fast(["sweep"], in_tmp)
    tiny["sweep"]["storage"] = None

    if not torch.cuda.is_available():
        tiny["train"]["accelerator"] = "gpu"
        write_params(in_tmp / "params.yaml", tiny)
        assert "train.accelerator=gpu: no CUDA GPU is visible" in fails_fast(["train"], in_tmp)
    tiny["train"]["accelerator"] = "gpus"
    write_params(in_tmp / "params.yaml", tiny)
    assert "train.accelerator=gpus: unknown" in fails_fast(["train"], in_tmp)
    tiny["train"]["accelerator"] = "cpu"
    tiny["train"]["compile"] = "reduce-overhead"
    write_params(in_tmp / "params.yaml", tiny)
    assert "train.compile=reduce-overhead adds CUDA graphs, and this run is on a CPU" in fails_fast(["train"], in_tmp)
