"""The GPU benchmark: how close the training step comes to the machine's limit, what Lightning costs over a bare
loop, how many small trials one GPU runs at once, and what the paper's scale costs. Its raw figures go to a
JSON file (benchmarks/gpu.json) and benchmarks/README.md quotes them.

    python benchmarks/gpu.py --only peak,step,lightning,largebatch --json benchmarks/gpu.json  # about 9 minutes
    python benchmarks/gpu.py --only concurrent,paper --json benchmarks/gpu-paper.json  # about 9 minutes
    python benchmarks/gpu.py --quick --device cpu      # checks the script on a CPU in about a minute

Every part measures on the machine it runs on: `peak` multiplies large bf16 matrices (fp32 on a CPU) for the
peak the MFU figures are taken against; `step` times the suite's GPT training step (bare PyTorch, the
optimizer and clipping of the suite) at the laptop and the paper size, over precision, batch size, data
resident on the device or copied each step, fused AdamW and torch.compile; `lightning` runs the suite's own
`training.fit` at the best setting against the bare loop of the same step; `largebatch` trains the default
run at batch 64, 256 and 1,024 (learning rate scaled by the square root, the same examples seen) and
compares what they learned; `concurrent` starts 1, 2, 4, 8
processes training laptop models on the same GPU and counts trials an hour; `paper` trains the paper preset
(10^6 examples, inputs of 50, patterns of 20, 6 x 256) for a few minutes and records seconds and accuracy
per epoch, and from them the cost of the threshold search and of the paper's 16-point grid.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from instdiv.engine import text
from instdiv.engine.training import flops_per_token
from instdiv.models.gpt import GPT, GPTConfig
from instdiv.tasks.rewrite import TASK
from instdiv.tasks.rewrite import generator as rewrite
from instdiv.tasks.rewrite import text as rtext
from instdiv.tasks.rewrite.config import RewriteConfig

REPO = Path(__file__).resolve().parents[1]
SIZES = {"laptop": ({"n_instructions": 1024, "total_examples": 50_000}, {"n_layer": 4, "d_model": 64}),
         "paper": ({"input_length": 50, "pattern_length": 20, "replacement_length": 20, "n_instructions": 1000,
                    "total_examples": 200_000}, {"n_layer": 6, "d_model": 256})}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_peak(device: str, quick: bool) -> dict:
    """Dense matrix product throughput: bf16 on a GPU, fp32 on a CPU (what the steps run in there)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = (2048 if quick else 8192) if device == "cuda" else (512 if quick else 2048)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    reps, times = (5 if quick else 20), []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        times.append((time.perf_counter() - start) / reps)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n,
            "tflops": round(2 * n ** 3 / statistics.median(times) / 1e12, 2)}


def data(size: str, quick: bool):
    rw, _ = SIZES[size]
    cfg = RewriteConfig(**{**rw, "total_examples": 5_000 if quick else rw["total_examples"]})
    rows = TASK.examples(rewrite.generate(cfg)["train"])
    block = rtext.sequence_lengths(cfg)[1]
    x, y = text.training_tensors(rtext.TOKENIZER, rows.prompts, rows.targets, block)
    return x, y, GPTConfig(vocab_size=rtext.TOKENIZER.vocab_size, block_size=block, **SIZES[size][1])


def bare_step(cfg: GPTConfig, x, y, device: str, batch: int, bf16: bool, resident: bool, fused: bool,
              compile_mode: str, steps: int, warmup: int = 5) -> dict:
    """Tokens/s of the suite's training step in a plain loop: the GPT, AdamW with its weight-decay groups, bf16
    autocast or fp32, gradient clipping; random batches from data on the device or copied there each step."""
    torch.manual_seed(0)
    model = GPT(cfg).to(device).train()
    groups = model.configure_optimizer(1e-3, 0.1).param_groups
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k in ("params", "weight_decay")} for g in groups],
                            lr=1e-3, betas=(0.9, 0.95), **({"fused": True} if fused else {"foreach": True}))
    forward = model if compile_mode == "none" else torch.compile(model, mode=compile_mode, dynamic=False)
    src_x, src_y = (x.to(device), y.to(device)) if resident else (x.pin_memory() if device == "cuda" else x, y)
    gen = torch.Generator(device=src_x.device).manual_seed(0)

    def step():
        idx = torch.randint(len(src_x), (batch,), device=src_x.device, generator=gen)
        xb, yb = src_x[idx].to(device, non_blocking=True), src_y[idx].to(device, non_blocking=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            _, loss = forward(xb.long(), yb.long())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    tokens = steps * batch * cfg.block_size
    per_token = flops_per_token(model, x[:batch].to(device), y[:batch].to(device))
    return {"tokens_per_s": round(tokens / seconds), "step_ms": round(1000 * seconds / steps, 3),
            "tflops": round(tokens / seconds * per_token / 1e12, 3)}


def bench_step(device: str, quick: bool, peak: float | None) -> dict:
    """One factor at a time from the plain setting (fp32, batch 64, data copied each step, foreach AdamW,
    eager), then the combination of the faster choices, at both sizes."""
    out = {}
    for size in ("laptop",) if quick else ("laptop", "paper"):
        x, y, cfg = data(size, quick)
        steps = 10 if quick else 200
        base = {"batch": 64, "bf16": False, "resident": False, "fused": False, "compile_mode": "none"}
        gpu = device == "cuda"
        variants = {"plain": {}, "bf16": {"bf16": True}, "resident": {"resident": True},
                    "fused": {"fused": True} if gpu else None, "compile": {"compile_mode": "default"},
                    "batch256": {"batch": 256}, "batch1024": {"batch": 1024} if not quick else None}
        rows = {}
        for name, change in variants.items():
            if change is None:
                continue
            rows[name] = bare_step(cfg, x, y, device, steps=steps, **{**base, **change})
            print(f"  step {size} {name}: {rows[name]}", flush=True)
        best = {"bf16": gpu, "resident": True, "fused": gpu, "compile_mode": "none"}
        # compiling takes about a minute each time: every batch size eager, the compiled modes at one batch
        runs = [(b, "none") for b in ((64,) if quick else (64, 256, 1024))]
        runs += [(64 if size == "laptop" else 256, m) for m in (("default", "reduce-overhead") if gpu else ())]
        for batch, mode in runs:
            key = f"best_b{batch}_{mode}"
            rows[key] = bare_step(cfg, x, y, device, steps=steps, **{**best, "batch": batch, "compile_mode": mode})
            print(f"  step {size} {key}: {rows[key]}", flush=True)
        for r in rows.values():
            if peak:
                r["mfu"] = round(r["tflops"] / peak, 4)
        out[size] = {"parameters": sum(p.numel() for p in GPT(cfg).parameters()), "block": cfg.block_size,
                     "steps": steps, **rows}
    return out


def _fit_speed(size: str, device: str, quick: bool, batch: int, compile_mode: str, steps: int) -> float:
    """Steady tokens/s of the suite's `training.fit` (Lightning, its callbacks, data on the device), as its
    SpeedMonitor logs it."""
    from lightning.pytorch.callbacks import Callback

    from instdiv.engine import training
    from instdiv.params import params_from_dict

    rw, model = SIZES[size]
    params = params_from_dict({
        "rewrite": {**rw, "total_examples": 5_000 if quick else rw["total_examples"]}, "model": model,
        "train": {"batch_size": batch, "max_steps": steps, "val_every_steps": steps, "compile": compile_mode,
                  "accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1, "threads": None},
        "evaluate": {"batch_size": 2048}})
    tables = TASK.generate(params)
    for name in list(tables):  # validation on one small split only: the speed of training is measured
        if name.startswith(("valid", "test")) and name != "valid_seen":
            del tables[name]
    tok = TASK.tokenizer(params)
    fd = training.fit_data(TASK, tok, params, tables)
    rates = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            rate = trainer.callback_metrics.get("perf/tokens_per_second")
            if rate is not None and trainer.global_step > steps // 3:
                rates.append(float(rate))

    with tempfile.TemporaryDirectory() as tmp:
        training.fit(params, TASK, tok, fd, logger=False, ckpt_dir=Path(tmp), verbose=False, callbacks=[Record()])
    return statistics.median(rates) if rates else math.nan


def bench_lightning(device: str, quick: bool, peak: float | None) -> dict:
    """The suite's Lightning path against the bare loop of the same step (bf16 on a GPU, data resident, fused
    AdamW), at the laptop size and batch 64 (what the sweeps train)."""
    gpu = device == "cuda"
    steps = 60 if quick else (1500 if gpu else 600)
    x, y, cfg = data("laptop", quick)
    out = {}
    for mode in ("none", "reduce-overhead") if gpu else ("none",):
        bares, lits = [], []
        for _ in range(1 if quick else 3):  # alternated, so both see the same load
            bares.append(bare_step(cfg, x, y, device, batch=64, bf16=gpu, resident=True, fused=gpu, compile_mode=mode,
                                   steps=steps)["tokens_per_s"])
            lits.append(_fit_speed("laptop", device, quick, 64, mode, steps))
        bare, lit = statistics.median(bares), statistics.median(lits)
        out[mode] = {"bare_tokens_per_s": round(bare), "lightning_tokens_per_s": round(lit),
                     "lightning_over_bare": round(lit / bare, 3), "repeats": len(bares)}
        print(f"  lightning {mode}: {out[mode]}", flush=True)
    return out


def bench_concurrent(device: str, quick: bool, peak: float | None) -> dict:
    """Laptop-size trials sharing one device: k processes each train the default step (batch 64, the best
    setting) for a fixed time; the sum of their tokens/s gives trials an hour (a trial: 6,000 steps)."""
    seconds = 10 if quick else 40
    counts = (1, 2) if quick else (1, 2, 4, 8, 12)
    out = {}
    trial_tokens = 6000 * 64 * data("laptop", True)[2].block_size
    for k in counts:
        cmd = [sys.executable, __file__, "--worker", str(seconds), "--device", device] + (["--quick"] if quick else [])
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
        rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["tokens_per_s"] for p in procs]
        out[f"{k}_processes"] = {"tokens_per_s_each": round(statistics.median(rates)),
                                 "tokens_per_s_total": round(sum(rates)),
                                 "trials_per_hour": round(3600 * sum(rates) / trial_tokens, 1)}
        print(f"  concurrent {k}: {out[f'{k}_processes']}", flush=True)
    one = out["1_processes"]["trials_per_hour"]
    best = max(v["trials_per_hour"] for v in out.values() if isinstance(v, dict))
    runs = suite_runs()
    out.update(best_over_one=round(best / one, 2), suite_runs=runs,
               suite_minutes_training=round(60 * sum(runs.values()) / best, 1))
    return out


def suite_runs() -> dict:
    """Training runs of the laptop-scale suite: the default threshold search and every experiment's grid (the
    code study's models counted as such; they are larger and longer, so the projection is a lower bound)."""
    from instdiv.engine import experiments
    from instdiv.engine.sweep.study import grid_points
    from instdiv.params import load_params

    params = load_params(REPO / "params.yaml")
    runs = {"threshold": params.sweep.max_trials,
            "code_study": len(params.mix.general_percents) * len(params.code_model.seeds)}
    for name in experiments.names():
        _, p = experiments.load(name, REPO / "params.yaml")
        runs[name] = len(grid_points(p)) if p.sweep.mode == "grid" else p.sweep.max_trials
    return runs


def worker(seconds: float, device: str, quick: bool) -> None:
    """One process of `concurrent`: the best laptop step for `seconds`, then its tokens/s on stdout."""
    torch.set_num_threads(1)
    x, y, cfg = data("laptop", quick)
    gpu = device == "cuda"
    steps, done, start = 50, 0, time.perf_counter()
    rates = []
    while time.perf_counter() - start < seconds:
        rates.append(bare_step(cfg, x, y, device, batch=64, bf16=gpu, resident=True, fused=gpu,
                               compile_mode="none", steps=steps, warmup=1 if done else 5)["tokens_per_s"])
        done += 1
    print(json.dumps({"tokens_per_s": statistics.median(rates)}))


def bench_largebatch(device: str, quick: bool, peak: float | None) -> dict:
    """Larger batches at the same number of examples seen: the default run (I = 1,024, batch 64, lr 3e-3, 6,000
    steps) against batch 256 and 1,024 with the learning rate scaled by the square root of the batch ratio and
    the steps divided by it; the validation accuracies say whether the faster run learns the same."""
    from lightning.pytorch.callbacks import Callback

    from instdiv.engine import training
    from instdiv.params import load_params

    base = load_params(REPO / "params.yaml")
    steps0 = 20 if quick else base.train.max_steps
    out = {}
    for batch in (64, 256) if quick else (64, 256, 1024):
        ratio = batch / 64
        tcfg = base.train.replace(batch_size=batch, lr=base.train.lr * math.sqrt(ratio),
                                  max_steps=max(1, int(steps0 / ratio)), val_every_steps=max(1, int(steps0 / ratio)),
                                  accelerator="gpu" if device == "cuda" else "cpu", devices=1, threads=None)
        params = base.replace(train=tcfg)
        if quick:
            params = params.replace(rewrite=params.rewrite.replace(total_examples=3000, n_valid_examples=64))
        tables = TASK.generate(params)
        tok = TASK.tokenizer(params)
        fd = training.fit_data(TASK, tok, params, tables)
        final = {}

        class Last(Callback):
            def on_validation_end(self, trainer, pl_module, final=final):
                final.update({k.removeprefix("val/"): round(float(v), 4) for k, v in trainer.callback_metrics.items()
                              if k.startswith("val/") and k.endswith("op_accuracy")})

        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            training.fit(params, TASK, tok, fd, logger=False, ckpt_dir=Path(tmp), verbose=False, callbacks=[Last()])
        out[f"batch{batch}"] = {"lr": round(tcfg.lr, 5), "steps": tcfg.max_steps,
                                "seconds": round(time.perf_counter() - start, 1), **final}
        print(f"  largebatch {batch}: {out[f'batch{batch}']}", flush=True)
    return out


def bench_paper(device: str, quick: bool, peak: float | None, minutes: float = 6.0) -> dict:
    """The paper preset's run (src/instdiv/presets/paper.yaml: 10^6 examples, 6 x 256, batch 256, lr 1e-3)
    through the suite's `training.fit` for `minutes`, validating each epoch: seconds per epoch (its validation
    included) and accuracy per epoch;
    from them the cost of a threshold search (sweep.max_trials runs) and of the paper's 16-point grid."""
    import yaml
    from lightning.pytorch.callbacks import Callback

    from instdiv.engine import training
    from instdiv.params import params_from_dict

    preset = yaml.safe_load((REPO / "src/instdiv/presets/paper.yaml").read_text())
    raw = {k: preset[k] for k in ("rewrite", "model", "train")}
    if quick:
        raw["rewrite"].update(total_examples=4000, n_instructions=200, n_unseen_instructions=50,
                              n_valid_examples=64, n_test_examples=64)
        raw["model"].update(n_layer=2, d_model=64)
    raw["train"].update(accelerator="gpu" if device == "cuda" else "cpu", devices=1, threads=None)
    params = params_from_dict({**raw, "evaluate": {"batch_size": 1024}})
    start = time.perf_counter()
    tables = TASK.generate(params)
    generate_s = time.perf_counter() - start
    tok = TASK.tokenizer(params)
    fd = training.fit_data(TASK, tok, params, tables)
    epoch_steps = math.ceil(len(fd.train) / params.train.batch_size)
    epochs = params.train.epochs
    params = params.replace(train=params.train.replace(val_every_steps=epoch_steps))
    budget, per_epoch = minutes * 60, []

    class Epochs(Callback):
        def on_train_start(self, trainer, pl_module):
            self.start = self.mark = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            now = time.perf_counter()
            m = trainer.callback_metrics
            per_epoch.append({"epoch": len(per_epoch) + 1, "seconds": round(now - self.mark, 1),
                              **{k.removeprefix("val/"): round(float(v), 4) for k, v in m.items()
                                 if k.startswith("val/") and k.endswith("_accuracy")},
                              **{k: round(float(v), 4) for k, v in m.items() if k.startswith("perf/")}})
            print(f"  paper epoch {per_epoch[-1]}", flush=True)
            self.mark = now
            if now - self.start > budget * len(per_epoch) / (len(per_epoch) + 1):  # the next would not fit
                trainer.should_stop = True

    with tempfile.TemporaryDirectory() as tmp:
        training.fit(params, TASK, tok, fd, logger=False, ckpt_dir=Path(tmp), verbose=False, callbacks=[Epochs()])
    epoch_s = statistics.median(e["seconds"] for e in per_epoch) if per_epoch else math.nan
    search_runs, grid_runs = 12, 16 * 3
    return {"examples": len(fd.train), "epoch_steps": epoch_steps, "generate_s": round(generate_s, 1),
            "epochs_run": len(per_epoch), "per_epoch": per_epoch, "epoch_s": epoch_s,
            "preset_epochs": epochs,
            "projected_hours": {"one_run_preset_epochs": round(epochs * epoch_s / 3600, 2),
                                "one_run_paper_50_epochs": round(50 * epoch_s / 3600, 2),
                                "threshold_search_12_runs": round(search_runs * epochs * epoch_s / 3600, 2),
                                "paper_grid_16_points_3_seeds": round(grid_runs * epochs * epoch_s / 3600, 2)},
            "note": "runs one at a time; `concurrent` gives how much sharing the GPU adds"}


BENCHES = {"peak": bench_peak, "step": bench_step, "lightning": bench_lightning, "largebatch": bench_largebatch,
           "concurrent": bench_concurrent, "paper": bench_paper}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the script, not the speed")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paper-minutes", type=float, default=6.0)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.device, args.quick)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu.py: no CUDA GPU is visible here; run it on a GPU machine, or with --device cpu --quick to "
                 "check the script")
    results = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if args.device == "cuda" else
               "cpu", "quick": args.quick}
    peak = None
    for name in args.only.split(","):
        print(f"{name}...", flush=True)
        if name == "peak":
            results[name] = bench_peak(args.device, args.quick)
            peak = results[name]["tflops"]
        elif name == "paper":
            minutes = 0.5 if args.quick else args.paper_minutes
            results[name] = bench_paper(args.device, args.quick, peak, minutes)
        else:
            results[name] = BENCHES[name](args.device, args.quick, peak)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        if args.json:  # after every part: a run cut off keeps what it measured
            Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
