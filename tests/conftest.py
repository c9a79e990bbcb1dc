"""Tiny settings so each test runs in seconds on a CPU, in its own temporary directory."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from instdiv.config import params_from_dict

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

TINY = {
    "rewrite": {"alphabet_size": 6, "pattern_length": 2, "replacement_length": 2, "input_length": 6,
                "n_instructions": 32, "examples_per_instruction": None, "total_examples": 640,
                "noop_share": 0.25, "skew": None, "holdout": "pairs", "n_unseen_instructions": 8, "n_test_examples": 64,
                "n_valid_examples": 32, "seed": 0},
    "model": {"n_layer": 2, "n_head": 2, "d_model": 32, "dropout": 0.0},
    "train": {"seed": 0, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.1, "warmup_frac": 0.1, "epochs": 1,
              "max_steps": 30, "val_every_steps": 10, "precision": "auto", "accelerator": "cpu",
              "devices": 1, "strategy": "auto", "grad_clip": 1.0, "checkpoint_dir": "checkpoints"},
    "evaluate": {"batch_size": 64, "n_samples": 5},
    "tracking": {"uri": None, "experiment": "tests"},
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


def write_params(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def params(raw: dict):
    return params_from_dict(raw)
