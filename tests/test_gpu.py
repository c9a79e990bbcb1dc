"""The GPU paths: data resident on the device, the fused optimizer, bf16 decoding with its KV cache, compiled
steps with CUDA graphs. Marked `gpu` and skipped where CUDA is absent (`make test-gpu` runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import params
from lightning.pytorch.callbacks import Callback

from instdiv.engine import decoding, stages, training
from instdiv.engine.text import EvalSet
from instdiv.tasks.rewrite import TASK

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DATA = Path("data/rewrite")


@pytest.fixture
def gpu_data(tiny, in_tmp):
    tiny["train"].update(accelerator="gpu", devices=1, max_steps=40, val_every_steps=20)
    p = params(tiny)
    stages.generate(p, TASK, DATA)
    tok = stages.tokenizer(p, TASK)
    return p, tok, training.fit_data(TASK, tok, p, TASK.read(DATA)[0])


def test_training_on_the_gpu_learns_with_its_data_resident_and_fused_adamw(gpu_data):
    p, tok, data = gpu_data
    seen = []

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((batch[0].device.type, trainer.optimizers[0].defaults.get("fused")))

    _, _, info = training.fit(p, TASK, tok, data, logger=False, ckpt_dir=Path("ck"), verbose=False,
                              callbacks=[Spy()])
    assert info["precision"] == "bf16-mixed" and info["steps"] == 40
    assert set(seen) == {("cuda", True)}  # batches indexed on the GPU, one fused optimizer kernel
    assert data.train.tensors[0].device.type == "cpu"  # given back on the CPU for the caller


def test_bf16_decoding_matches_fp32_on_a_trained_model(gpu_data):
    p, tok, data = gpu_data
    p = p.replace(train=p.train.replace(max_steps=200, val_every_steps=200))
    net, _, _ = training.fit(p, TASK, tok, data, logger=False, ckpt_dir=Path("ck"), verbose=False)
    es = EvalSet(*next(iter(data.val.values())).tensors)
    fp32 = decoding.predict(net.cpu(), es, tok, 64, "cpu")  # fp32 on the CPU
    bf16 = decoding.predict(net.cuda(), es, tok, 64, "cuda")  # bf16 autocast, bf16 KV cache
    agree = (fp32 == bf16).all(1).float().mean().item()
    assert agree >= 0.98, agree


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_on_the_gpu_matches_eager(gpu_data, mode):
    p, tok, data = gpu_data
    eager, _, _ = training.fit(p, TASK, tok, data, logger=False, ckpt_dir=Path("ck/e"), verbose=False)
    q = p.replace(train=p.train.replace(compile=mode))
    compiled, _, _ = training.fit(q, TASK, tok, data, logger=False, ckpt_dir=Path(f"ck/{mode}"), verbose=False)
    x, y = (t[:256].long() for t in data.train.tensors)
    with torch.no_grad():
        le, lc = eager(x, y)[1].item(), compiled(x, y)[1].item()
    assert abs(le - lc) < 0.02 * le, (le, lc)
