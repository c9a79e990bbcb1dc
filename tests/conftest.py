"""Tiny settings so each test runs in seconds on a CPU, in its own temporary directory."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from instdiv.params import params_from_dict

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

TINY = {
    "rewrite": {"alphabet_size": 6, "pattern_length": 2, "replacement_length": 2, "input_length": 6,
                "n_instructions": 32, "examples_per_instruction": None, "total_examples": 640,
                "noop_share": 0.25, "skew": None, "holdout": "pairs", "n_unseen_instructions": 8, "n_test_examples": 64,
                "n_valid_examples": 32, "seed": 0,
                "families": None, "family_k": None, "occurrences": None, "test_occurrences": None, "encrypt": False},
    "code": {"n_programs": 20, "examples_per_program": 3, "depth": [1, 2], "n_test_programs": 5,
             "tests_per_program": 3, "seed": 0},
    "mix": {"total_examples": 40, "general_percents": [0, 25], "general_tasks": ["rewrite", "arithmetic", "words"],
            "code_source": None, "general_source": None, "seed": 0},
    "code_model": {"epochs": 2, "batch_size": 16, "timeout_seconds": 5, "memory_mb": 512, "workers": 2,
                   "benchmarks": []},
    "model": {"n_layer": 2, "n_head": 2, "d_model": 32, "dropout": 0.0},
    "train": {"seed": 0, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.1, "warmup_frac": 0.1, "epochs": 1,
              "max_steps": 30, "val_every_steps": 10, "precision": "auto", "accelerator": "cpu",
              "devices": 1, "strategy": "auto", "grad_clip": 1.0, "checkpoint_dir": "checkpoints"},
    "evaluate": {"batch_size": 64, "n_samples": 5},
    "tracking": {"uri": None, "experiment": "tests"},
    "sweep": {"mode": "threshold", "task": "rewrite", "study": "tests", "storage": None, "metric": "unseen_op_accuracy",
              "target": 0.5, "instructions": [4, 32], "axes": {}, "total_examples": None, "seeds": [0],
              "max_trials": 3, "workers": 1, "max_retries": 2, "heartbeat_seconds": 30, "pruning": False,
              "epochs": None, "confidence": 0.9},
}


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of the tiny params, to edit per test."""
    return copy.deepcopy(TINY)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty directory that is also the root for MLflow's store (DVC_ROOT)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


class Interrupted(Exception):
    """A training run killed mid-way (raised from inside a training step)."""


@pytest.fixture
def kill_training_at(monkeypatch):
    """`kill_training_at(step)`: training runs from now on raise Interrupted when they reach `step` (after the
    checkpoints before it were written); `kill_training_at(None)`: they train normally again."""
    from instdiv.engine.training import LitCausalLM

    step = LitCausalLM.training_step

    def kill(at: int | None) -> None:
        def killed(self, batch, batch_idx):
            if self.global_step == at:
                raise Interrupted
            return step(self, batch, batch_idx)

        monkeypatch.setattr(LitCausalLM, "training_step", step if at is None else killed)

    return kill


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60):
    import time
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer")


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (SQLite behind it, artifacts proxied), for one test: its URL."""
    import signal
    import subprocess
    import sys

    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen([exe, "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                               "--artifacts-destination", str(tmp_path / "server-artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)


def write_params(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def params(raw: dict):
    return params_from_dict(raw)


def _postgres_bin() -> Path | None:
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1 for the test session (installed by `make test` when missing)."""
    import shutil
    import socket
    import subprocess
    import tempfile

    bin_dir = _postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; `make test` installs it (scripts/ensure-postgres.sh)")
        pytest.skip("PostgreSQL is not installed; run `make test` or scripts/ensure-postgres.sh")
    data = Path(tempfile.mkdtemp(prefix="instdiv-pg-", dir="/tmp"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust")
    run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"), "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def tiny_hf_model(directory: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A random 2-layer Hugging Face causal LM and a character-level tokenizer (with one merge, so a token can
    span two characters), saved as a user's local model directory would be."""
    from instdiv.models.hf import save_random_model

    return save_random_model(directory, arch, merges=(("a", "b"),), seed=seed)
