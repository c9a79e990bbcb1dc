"""Training with Lightning on CPU: a fast_dev_run, and resume of an interrupted run into its MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from instdiv.config import TrainConfig
from instdiv.engine import stages, training
from instdiv.engine.training import LitCausalLM
from instdiv.models.gpt import FAMILY as GPT, GPTSection
from instdiv.tasks.rewrite import TASK

from conftest import Interrupted, params

DATA = Path("data/rewrite")


@pytest.fixture
def tiny_data(tiny, in_tmp):
    p = params(tiny)
    stages.generate(p, TASK, DATA)
    return p


def fit_inputs(p):
    tok = stages.tokenizer(p, TASK)
    return tok, training.fit_data(TASK, tok, p, TASK.read(DATA)[0])


def train_stage(p):
    return stages.train(p, TASK, DATA, Path("models/model.pt"), Path("reports/plots"))


def test_fast_dev_run_on_cpu(tiny_data):
    p = tiny_data
    tok, data = fit_inputs(p)
    train_loader, val_loaders = training.loaders(p.train, data, p.evaluate.batch_size)
    lit = LitCausalLM(GPT.build(p.model, tok, data.block_size), p.train, 10, tok, data)
    trainer = training.build_trainer(p.train, "32-true", 10, fast_dev_run=True)
    trainer.fit(lit, train_loader, val_loaders)
    assert trainer.state.finished and trainer.global_step == 1
    assert "val/unseen_op_accuracy" in trainer.callback_metrics


def test_precision_choice_follows_measurement():
    choose = training.choose_precision
    assert choose(TrainConfig(), GPT, GPTSection(d_model=64)) in ("32-true", "bf16-mixed")
    if not torch.cuda.is_available():
        assert choose(TrainConfig(), GPT, GPTSection(d_model=64)) == "32-true"
        assert choose(TrainConfig(), GPT, GPTSection(d_model=256)) == "bf16-mixed"
    assert choose(TrainConfig(precision="32-true"), GPT, GPTSection(d_model=512)) == "32-true"


def test_interrupted_run_resumes_into_the_same_mlflow_run(tiny_data, in_tmp, kill_training_at):
    p = tiny_data  # 30 steps, validation and checkpoint every 10
    p = p.replace(train=p.train.replace(val_every_steps=10))
    kill_training_at(25)
    with pytest.raises(Interrupted):
        train_stage(p)
    (ckpt_dir,) = (in_tmp / "checkpoints").iterdir()
    first = json.loads((ckpt_dir / "run.json").read_text())
    assert not first["finished"]
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 20

    kill_training_at(None)
    info = train_stage(p)
    assert info["run_id"] == first["run_id"] and info["steps"] == 30
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(info["run_id"], "val/unseen_op_accuracy")]
    assert len(steps) == len(set(steps)) == 3  # validations at 10, 20 (before the crash) and 30, none lost
    # a finished run rerun starts afresh (dvc repro -f), in a new MLflow run
    again = train_stage(p)
    assert again["run_id"] != info["run_id"] and again["steps"] == 30


def history(client, run_id: str) -> dict:
    return {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for key in client.get_run(run_id).data.metrics}


@pytest.mark.parametrize("every,checkpoint", [(7, 21), (10, 20)], ids=["mid-epoch", "epoch-end"])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(tiny_data, in_tmp, kill_training_at, every,
                                                                   checkpoint):
    """Killed after a checkpoint (20 batches an epoch: step 21 is mid-epoch, step 20 an epoch's end; the crash
    at 25), run again: every tensor of the final training state and of the model written, and every metric
    step, as in a run never interrupted; no step logged twice."""
    p = tiny_data.replace(train=tiny_data.train.replace(val_every_steps=every, max_steps=45))
    reference = stages.train(p.replace(train=p.train.replace(checkpoint_dir="reference")), TASK, DATA,
                             Path("models/reference.pt"), None)
    kill_training_at(25)
    with pytest.raises(Interrupted):
        stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    (ckpt_dir,) = (in_tmp / "checkpoints").iterdir()
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == checkpoint
    kill_training_at(None)
    resumed = stages.train(p, TASK, DATA, Path("models/model.pt"), None)

    def tensors(obj, prefix=""):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from tensors(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from tensors(v, f"{prefix}.{i}")

    ref_dir = next((in_tmp / "reference").iterdir())
    ours = {k.replace(str(ckpt_dir.resolve()), "<dir>"): v
            for k, v in tensors(torch.load(ckpt_dir / "last.ckpt", weights_only=True))}
    theirs = {k.replace(str(ref_dir.resolve()), "<dir>"): v
              for k, v in tensors(torch.load(ref_dir / "last.ckpt", weights_only=True))}
    assert ours.keys() == theirs.keys() and len(ours) > 50
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, different
    written = torch.load("models/model.pt", weights_only=True)["state_dict"]
    expected = torch.load("models/reference.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    assert resumed["last_validation"] == reference["last_validation"]
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    got, want = history(client, resumed["run_id"]), history(client, reference["run_id"])
    if checkpoint % 20 == 0:
        # Resumed from a checkpoint taken at an epoch's last batch, Lightning counts that epoch twice: its own
        # `epoch` value is one higher from there on (weights, data order and every other metric are equal).
        got, want = ({k: v for k, v in h.items() if k != "epoch"} for h in (got, want))
    # speed is measured, not computed: the same steps, other values
    speed = [k for k in want if k.startswith("perf/")]
    assert {"perf/tokens_per_second", "perf/step_ms", "perf/tflops"} <= set(speed)
    assert all([s for s, _ in got.pop(k)] == [s for s, _ in want.pop(k)] for k in speed)
    # system metrics are samples of the machine in time: the interrupted run's continue its own numbering
    for h in (got, want):
        system = {k: h.pop(k) for k in list(h) if k.startswith("system/")}
        assert all(len({s for s, _ in v}) == len(v) for v in system.values())
    assert got == want  # the same steps and values: nothing logged twice, nothing lost
    # (Lightning logs `epoch` with each logging call, so it alone may repeat a step, in both runs alike)
    assert all(len({s for s, _ in steps}) == len(steps) for key, steps in got.items() if key != "epoch")


def test_training_is_deterministic(tiny_data):
    p = tiny_data.replace(train=tiny_data.train.replace(max_steps=12, val_every_steps=6))
    tok, data = fit_inputs(p)
    first, _, _ = training.fit(p, TASK, tok, data, logger=False, ckpt_dir=Path("checkpoints/a"), verbose=False)
    second, _, _ = training.fit(p, TASK, tok, data, logger=False, ckpt_dir=Path("checkpoints/b"), verbose=False)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_ddp_on_two_cpu_processes_records_once(tiny, in_tmp):
    """train.devices: 2 with the ddp strategy (gloo on CPU): Lightning starts a second process running the
    same command; one MLflow run, run.json and model come from rank 0, the step budget counts the global
    batch, and validation scores the full sets."""
    import os
    import subprocess
    import sys

    from conftest import write_params

    tiny["train"].update(devices=2, strategy="ddp", max_steps=None, epochs=1, val_every_steps=5)
    write_params(in_tmp / "params.yaml", tiny)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for command in (["generate"], ["train"]):
        out = subprocess.run([sys.executable, "-m", "instdiv", *command], cwd=in_tmp, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((in_tmp / "models/rewrite.json").read_text())
    assert info["steps"] == info["total_steps"] == 10  # 640 rows, 32 per process, 2 processes: 10 steps an epoch
    (ckpt_dir,) = (in_tmp / "checkpoints").iterdir()
    assert json.loads((ckpt_dir / "run.json").read_text()) == {"run_id": info["run_id"], "finished": True}
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.run_id for r in runs] == [info["run_id"]] and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(info["run_id"], "val/unseen_op_accuracy")]
    assert steps == sorted(set(steps)) and len(steps) == 2
    assert torch.load(in_tmp / "models/rewrite.pt", weights_only=True)["state_dict"]


def test_small_epochs_log_without_lightning_warning(tiny_data, recwarn):
    # 640 rows at batch 32: 20 batches an epoch, fewer than Lightning's default logging interval
    p = tiny_data.replace(train=tiny_data.train.replace(max_steps=24, val_every_steps=500))
    tok, data = fit_inputs(p)
    from lightning.pytorch.loggers import CSVLogger  # Lightning checks the interval only when something logs

    training.fit(p, TASK, tok, data, logger=CSVLogger("logs"), ckpt_dir=Path("checkpoints/a"), verbose=False)
    assert not [w for w in recwarn if "log_every_n_steps" in str(w.message)]


def test_compile_needs_a_compiler_and_says_so(monkeypatch):
    import shutil

    from instdiv.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if shutil.which("g++"):
        training.check_compile(TrainConfig(compile="default"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="train.compile=default: torch.compile on a CPU needs a C\\+\\+ compiler"):
        training.check_compile(TrainConfig(compile="default"))
    training.check_compile(TrainConfig(compile="none"))


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_data):
    """train.compile: the same run through torch.compile (inductor, C++ on a CPU) ends where eager ends, to
    float tolerance, and its checkpoint holds the network's own parameter names (about a minute: compiling)."""
    p = tiny_data.replace(train=tiny_data.train.replace(max_steps=20, val_every_steps=10))
    tok, data = fit_inputs(p)
    eager, _, _ = training.fit(p, TASK, tok, data, logger=False, ckpt_dir=Path("checkpoints/eager"), verbose=False)
    q = p.replace(train=p.train.replace(compile="default"))
    compiled, _, _ = training.fit(q, TASK, tok, data, logger=False, ckpt_dir=Path("checkpoints/c"), verbose=False)
    assert eager.state_dict().keys() == compiled.state_dict().keys()
    for name, a in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], a, rtol=1e-3, atol=1e-4)
    saved = torch.load("checkpoints/c/last.ckpt", weights_only=True)["state_dict"]
    assert not [k for k in saved if "_orig_mod" in k]


def test_muon_trains_the_hidden_matrices_and_resumes_exactly(tiny_data, in_tmp, kill_training_at):
    """train.optimizer: muon steps Muon on the blocks' matrices and AdamW on the rest, under one schedule; a run
    killed mid-way resumes both optimizers' states to the uninterrupted result."""
    from instdiv.engine import optim

    p = tiny_data.replace(train=tiny_data.train.replace(optimizer="muon", max_steps=30, val_every_steps=10))
    network = GPT.build(p.model, stages.tokenizer(p, TASK), 32)
    opt = optim.build(network, "muon", 3e-3, 0.1)
    muon, adamw = opt.inner
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    embedded = {id(network.wte.weight), id(network.wpe.weight)}
    assert all(p_.dim() == 2 and id(p_) not in embedded for g in muon.param_groups for p_ in g["params"])
    assert len(opt.param_groups) == len(muon.param_groups) + len(adamw.param_groups)
    reference = stages.train(p.replace(train=p.train.replace(checkpoint_dir="reference")), TASK, DATA,
                             Path("models/reference.pt"), None)
    kill_training_at(15)
    with pytest.raises(Interrupted):
        stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    kill_training_at(None)
    stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    written = torch.load("models/model.pt", weights_only=True)["state_dict"]
    expected = torch.load("models/reference.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    stages.train(p.replace(train=p.train.replace(optimizer="adamw", checkpoint_dir="adam")), TASK, DATA,
                 Path("models/adam.pt"), None)
    adam = torch.load("models/adam.pt", weights_only=True)["state_dict"]
    assert not torch.equal(adam["blocks.0.attn.c_attn.weight"], expected["blocks.0.attn.c_attn.weight"])
