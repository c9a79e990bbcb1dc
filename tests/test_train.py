"""Training with Lightning on CPU: a fast_dev_run, and resume of an interrupted run into its MLflow run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import pytest
import torch

from instdiv import rewrite
from instdiv import train as train_mod
from instdiv.config import ModelConfig, TrainConfig

from conftest import params


@pytest.fixture
def tiny_data(tiny, in_tmp):
    p = params(tiny)
    rewrite.write(rewrite.generate(p.rewrite), p.rewrite)
    return p


def test_fast_dev_run_on_cpu(tiny_data):
    p = tiny_data
    data = train_mod.rewrite_data(p, train_mod.read_tables()[0])
    train_loader, val_loaders = train_mod.loaders(p.train, data)
    lit = train_mod.LitGPT(dataclasses.asdict(data.gpt), vars(p.train), total_steps=10)
    trainer = train_mod.build_trainer(p.train, p.model, 10, fast_dev_run=True)
    trainer.fit(lit, train_loader, val_loaders)
    assert trainer.state.finished and trainer.global_step == 1
    assert "val/unseen_op_accuracy" in trainer.callback_metrics


def test_precision_choice_follows_measurement():
    assert train_mod.choose_precision(TrainConfig(), ModelConfig(d_model=64)) in ("32-true", "bf16-mixed")
    if not torch.cuda.is_available():
        assert train_mod.choose_precision(TrainConfig(), ModelConfig(d_model=64)) == "32-true"
        assert train_mod.choose_precision(TrainConfig(), ModelConfig(d_model=256)) == "bf16-mixed"
    assert train_mod.choose_precision(TrainConfig(precision="32-true"), ModelConfig(d_model=512)) == "32-true"


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_into_the_same_mlflow_run(tiny_data, in_tmp, monkeypatch):
    p = tiny_data  # 30 steps, validation and checkpoint every 10
    step = train_mod.LitGPT.training_step

    def crash_at_25(self, batch, batch_idx):
        if self.global_step == 25:
            raise Interrupted
        return step(self, batch, batch_idx)

    monkeypatch.setattr(train_mod.LitGPT, "training_step", crash_at_25)
    with pytest.raises(Interrupted):
        train_mod.train(p)
    (ckpt_dir,) = (in_tmp / "checkpoints").iterdir()
    first = json.loads((ckpt_dir / "run.json").read_text())
    assert not first["finished"]
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 20

    monkeypatch.setattr(train_mod.LitGPT, "training_step", step)
    info = train_mod.train(p)
    assert info["run_id"] == first["run_id"] and info["steps"] == 30
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(info["run_id"], "val/unseen_op_accuracy")]
    assert len(steps) == len(set(steps)) == 3  # validations at 10, 20 (before the crash) and 30, none lost
    # a finished run rerun starts afresh (dvc repro -f), in a new MLflow run
    again = train_mod.train(p)
    assert again["run_id"] != info["run_id"] and again["steps"] == 30


def test_training_is_deterministic(tiny_data):
    p = dataclasses.replace(tiny_data, train=dataclasses.replace(tiny_data.train, max_steps=12, val_every_steps=6))
    data = train_mod.rewrite_data(p, train_mod.read_tables()[0])
    first, _ = train_mod.fit(p, data, logger=False, ckpt_dir=Path("checkpoints/a"), verbose=False)
    second, _ = train_mod.fit(p, data, logger=False, ckpt_dir=Path("checkpoints/b"), verbose=False)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
