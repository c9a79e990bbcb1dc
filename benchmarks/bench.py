"""Rerunnable speed benchmarks; figures are recorded in benchmarks/README.md.

    python benchmarks/bench.py [--quick] [--only generator,loader,lightning,kvcache,precision,batch,sandbox,workers,lora,hfdecode] [--json out.json]

Ratios are measured side by side in one process, alternating the contenders, so a noisy shared machine
slows both alike. Each figure is the median of several repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from instdiv.config import TrainConfig
from instdiv.engine import text
from instdiv.engine.text import EvalSet
from instdiv.engine.training import FitData, LitCausalLM, build_trainer
from instdiv.models.gpt import GPT, GPTConfig
from instdiv.tasks.rewrite import TASK
from instdiv.tasks.rewrite import generator as rewrite
from instdiv.tasks.rewrite import text as rtext
from instdiv.tasks.rewrite.config import RewriteConfig

tok = rtext.TOKENIZER


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_generator(quick: bool) -> dict:
    n = 100_000 if quick else 1_000_000
    cfg = RewriteConfig(total_examples=n, n_instructions=1024)
    seconds = statistics.median(timed(lambda: rewrite.generate(cfg)) for _ in range(3))
    return {"examples": n, "seconds": round(seconds, 2), "examples_per_s": round(n / seconds)}


def _setup(d_model: int, n_layer: int = 4, batch: int = 64):
    rcfg = RewriteConfig(total_examples=20_000, n_instructions=512)
    rows = TASK.examples(rewrite.generate(rcfg)["train"])
    block = rtext.sequence_lengths(rcfg)[1]
    data = torch.utils.data.TensorDataset(*text.training_tensors(tok, rows.prompts, rows.targets, block))
    gpt = GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=n_layer, d_model=d_model)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    return gpt, loader


def _lit(gpt: GPTConfig, tcfg: TrainConfig, steps: int) -> LitCausalLM:
    torch.manual_seed(0)
    no_validation = FitData(torch.utils.data.TensorDataset(), {}, 0, gpt.block_size)
    return LitCausalLM(GPT(gpt), tcfg, steps, tok, no_validation)


def _bare_loop(gpt: GPTConfig, loader, tcfg: TrainConfig, steps: int, precision: str) -> float:
    """The same model, data, optimizer, schedule and clipping as the LightningModule, with no framework."""
    lit = _lit(gpt, tcfg, steps)
    opt_cfg = lit.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    model = lit.network.train()
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            _, loss = model(x.long(), y.long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        sched.step()
    return time.perf_counter() - start


def _lightning(gpt: GPTConfig, loader, tcfg: TrainConfig, steps: int, precision: str) -> float:
    lit = _lit(gpt, tcfg, steps)
    tcfg = tcfg.replace(accelerator="cpu", devices=1)
    trainer = build_trainer(tcfg, precision, steps, enable_checkpointing=False, limit_val_batches=0,
                            enable_progress_bar=False)
    start = time.perf_counter()
    trainer.fit(lit, loader)
    return time.perf_counter() - start


def bench_loader(quick: bool) -> dict:
    """Training batches per second: the suite's loader (whole batches indexed at once, training.loaders) against
    the per-row loader it replaced (the same sampler, default collate), the same rows in the same order."""
    from instdiv.engine.training import EpochOrder, loaders

    gpt, plain = _setup(64)
    data = FitData(plain.dataset, {}, 0, gpt.block_size)
    n = 300 if quick else 3000
    tcfg = TrainConfig()

    def per_row():
        order = EpochOrder(len(data.train), 0)
        return torch.utils.data.DataLoader(data.train, batch_size=64, sampler=order, generator=order.generator)

    def drain(loader):
        it, k = iter(loader), 0
        while k < n:
            for _ in it:
                k += 1
                if k == n:
                    return
            it = iter(loader)

    old, new = [], []
    for _ in range(3):
        old.append(timed(lambda: drain(per_row())))
        new.append(timed(lambda: drain(loaders(tcfg, data, 512)[0])))
    o, w = statistics.median(old), statistics.median(new)
    return {"batches": n, "per_row_batches_per_s": round(n / o), "indexed_batches_per_s": round(n / w),
            "speedup": round(o / w, 1)}


def bench_lightning(quick: bool) -> dict:
    steps, repeats = (60, 2) if quick else (300, 3)
    gpt, loader = _setup(64)
    tokens = steps * loader.batch_size * gpt.block_size
    tcfg = TrainConfig()
    bare, lit = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        bare.append(_bare_loop(gpt, loader, tcfg, steps, "32-true"))
        lit.append(_lightning(gpt, loader, tcfg, steps, "32-true"))
    b, li = statistics.median(bare), statistics.median(lit)
    return {"steps": steps, "bare_tokens_per_s": round(tokens / b), "lightning_tokens_per_s": round(tokens / li),
            "lightning_over_bare": round(b / li, 3)}


def bench_precision(quick: bool) -> dict:
    """fp32 against bf16 autocast on this machine's CPU, per model width (what train.precision=auto uses)."""
    steps = 20 if quick else 60
    out = {}
    for d in (64, 256):
        gpt, loader = _setup(d)
        tcfg = TrainConfig()
        fp32, bf16 = [], []
        for _ in range(2 if quick else 3):
            fp32.append(_bare_loop(gpt, loader, tcfg, steps, "32-true"))
            bf16.append(_bare_loop(gpt, loader, tcfg, steps, "bf16-mixed"))
        out[f"d{d}_bf16_speedup"] = round(statistics.median(fp32) / statistics.median(bf16), 2)
    return out


def bench_batch(quick: bool) -> dict:
    """Training rows per second of the default GPT on one thread (a sweep worker's share of the CPU) at batch
    16 to 256, the batches alternating: whether a smaller batch buys time (more steps a second) or a larger
    one buys throughput (rows a second)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps = 10 if quick else 60
    batches = (16, 32, 64, 128, 256)
    seconds: dict[int, list[float]] = {b: [] for b in batches}
    try:
        setups = {b: _setup(64, batch=b) for b in batches}
        for _ in range(2 if quick else 3):
            for b, (gpt, loader) in setups.items():
                seconds[b].append(_bare_loop(gpt, loader, TrainConfig(), steps, "32-true"))
    finally:
        torch.set_num_threads(threads)
    out = {"threads": 1, "steps": steps}
    for b in batches:
        step = statistics.median(seconds[b]) / steps
        out[f"batch{b}_step_ms"] = round(1000 * step, 1)
        out[f"batch{b}_rows_per_s"] = round(b / step)
    return out


@torch.no_grad()
def bench_kvcache(quick: bool) -> dict:
    cfg = RewriteConfig(n_instructions=512, total_examples=512, n_test_examples=512)
    rows = TASK.examples(rewrite.generate(cfg)["test_unseen"])
    width, block = rtext.sequence_lengths(cfg)
    es = EvalSet.build(tok, rows.prompts, rows.targets, width, block - width + 1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block)).eval()
    n = es.targets.size(1)
    # An untrained model rarely emits EOS, so both decode all n tokens: the fair worst case for each.
    cached, plain = [], []
    for _ in range(2 if quick else 5):
        cached.append(timed(lambda: model.generate(es.prompts, es.mask, n, text.EOS_ID)))
        plain.append(timed(lambda: model.generate(es.prompts, es.mask, n, text.EOS_ID, use_cache=False)))
    c, p = statistics.median(cached), statistics.median(plain)
    rows = len(es.prompts)
    return {"batch": rows, "new_tokens": n, "cached_seq_per_s": round(rows / c), "plain_seq_per_s": round(rows / p),
            "speedup": round(p / c, 2)}


def _hf_model(tmp: str, hidden: int, layers: int, heads: int, lora_r: int | None, block: int):
    """A random Llama of the given size through the suite's hf family (the real loading path); its gated MLP
    of 8/3 x hidden has the parameters of the GPT's 4 x hidden."""
    from transformers.utils import logging as hf_logging

    from instdiv.models.hf import FAMILY as HF
    from instdiv.models.hf import HFSection, load_tokenizer, save_random_model

    hf_logging.set_verbosity_error()  # (decoding with no EOS, on purpose: it says so for every batch)
    path = save_random_model(Path(tmp) / f"llama-{hidden}-{layers}-{lora_r}", hidden=hidden, layers=layers,
                             heads=heads, intermediate=8 * hidden // 3)
    cfg = HFSection(path=str(path), lora_r=lora_r, lora_dropout=0.0)
    hf_tok = load_tokenizer(cfg)
    return HF.build(cfg, hf_tok, block), hf_tok


def bench_lora(quick: bool) -> dict:
    """Training tokens/s of a random Llama (d 256, 4 layers) fine-tuned with LoRA (rank 16, every linear layer)
    against in full, the same batches and steps in a bare loop, alternating (fp32 on a CPU)."""
    import tempfile

    steps, batch, seq = (5, 8, 64) if quick else (30, 16, 128)
    out = {"hidden": 256, "layers": 4, "batch": batch, "sequence": seq, "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        nets = {"lora": _hf_model(tmp, 256, 4, 4, 16, seq)[0], "full": _hf_model(tmp, 256, 4, 4, None, seq)[0]}
        g = torch.Generator().manual_seed(0)
        x = torch.randint(4, 100, (batch, seq), generator=g)
        times = {k: [] for k in nets}
        for _ in range(1 if quick else 3):
            for name, net in nets.items():
                opt = net.configure_optimizer(1e-4, 0.0)
                net.train()

                def run():
                    for _ in range(steps):
                        _, loss = net(x, x)
                        loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)

                times[name].append(timed(run))
        for name, net in nets.items():
            out[f"{name}_tokens_per_s"] = round(steps * batch * seq / statistics.median(times[name]))
            out[f"{name}_trainable_parameters"] = net.trainable_params()
        out["lora_over_full"] = round(out["lora_tokens_per_s"] / out["full_tokens_per_s"], 2)
    return out


@torch.no_grad()
def bench_hfdecode(quick: bool) -> dict:
    """Batched greedy decoding of the rewrite prompts: the hf family (transformers' generate and its KV cache)
    against the suite's GPT and its KV cache, at equal size (d 64, 4 layers, 4 heads, 4x MLP), alternating."""
    import tempfile

    cfg = RewriteConfig(n_instructions=512, total_examples=512, n_test_examples=128 if quick else 512)
    rows = TASK.examples(rewrite.generate(cfg)["test_unseen"])
    width, block = rtext.sequence_lengths(cfg)
    n = block - width + 1
    with tempfile.TemporaryDirectory() as tmp:
        hf_net, hf_tok = _hf_model(tmp, 64, 4, 4, None, block + 8)
        hf_net.eval()
        hf_set = EvalSet.build(hf_tok, rows.prompts, rows.targets, width, n)
        torch.manual_seed(0)
        gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block)).eval()
        es = EvalSet.build(tok, rows.prompts, rows.targets, width, n)
        # Untrained models rarely emit EOS, so both decode all n tokens.
        hf_times, gpt_times = [], []
        for _ in range(2 if quick else 5):
            hf_times.append(timed(lambda: hf_net.generate(hf_set.prompts, hf_set.mask, n, -1, hf_tok.pad_id)))
            gpt_times.append(timed(lambda: gpt.generate(es.prompts, es.mask, n, -1)))
        h, g = statistics.median(hf_times), statistics.median(gpt_times)
        out = {"batch": len(rows.prompts), "new_tokens": n, "gpt_parameters": gpt.num_params(),
               "hf_parameters": hf_net.num_params(), "hf_seq_per_s": round(len(rows.prompts) / h),
               "gpt_seq_per_s": round(len(rows.prompts) / g), "gpt_over_hf": round(h / g, 2)}
    return out


def bench_sandbox(quick: bool) -> dict:
    """Programs checked per second: the synthetic code tasks' targets and tests on the pool of warm sandbox
    processes (a fork per program), with 1, CPU-count and 2x CPU-count workers, against a fresh sandbox process
    per program (the same runner started, given one job and closed: the interpreter start-up every program
    paid before), alternating, the median of 3."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from instdiv.tasks.code import programs as codetasks
    from instdiv.tasks.code import sandbox
    from instdiv.tasks.code.config import CodeConfig

    rows = codetasks.generate(CodeConfig(n_programs=40 if quick else 200, examples_per_program=2))["train"]
    jobs = list(zip(rows.column("target").to_pylist(), rows.column("test").to_pylist()))
    cpus = os.cpu_count() or 1

    def fresh(job):
        server = sandbox.Server()
        try:
            return server.run(*job, sandbox.Limits())
        finally:
            server.close()

    def fresh_pool():
        with ThreadPoolExecutor(cpus) as pool:
            assert all(r.passed for r in pool.map(fresh, jobs))

    def warm_pool(workers):
        assert all(r.passed for r in sandbox.run_many(jobs, workers=workers))

    out = {"programs": len(jobs)}
    times: dict[str, list[float]] = {}
    for _ in range(1 if quick else 3):
        times.setdefault(f"fresh_{cpus}", []).append(timed(fresh_pool))
        for workers in sorted({1, cpus, 2 * cpus}):
            times.setdefault(f"warm_{workers}", []).append(timed(lambda: warm_pool(workers)))
    for key, values in times.items():
        out[f"programs_per_s_{key}_workers"] = round(len(jobs) / statistics.median(values), 1)
    out["warm_over_fresh"] = round(out[f"programs_per_s_warm_{cpus}_workers"]
                                   / out[f"programs_per_s_fresh_{cpus}_workers"], 2)
    return out


def bench_workers(quick: bool) -> dict:
    """Sweep throughput on this machine: the same grid of trials (the default model and data, a short fixed
    budget) with `workers` processes of cpu_count / workers threads each, alternating, through `instdiv sweep`
    (one process at 1 worker runs its trials in-process with every thread)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    steps = 200 if quick else 1000
    base = yaml.safe_load((repo / "params.yaml").read_text())
    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    times: dict[int, list[float]] = {w: [] for w in counts}
    for rep in range(1 if quick else 2):
        for workers in counts:
            with tempfile.TemporaryDirectory() as tmp:
                p = {**base, "train": {**base["train"], "max_steps": steps, "val_every_steps": steps,
                                       "threads": max(1, cores // workers)},
                     "tracking": {**base["tracking"], "uri": f"sqlite:///{tmp}/mlflow.db"},
                     "sweep": {**base["sweep"], "mode": "grid", "instructions": [256, 512], "axes": {},
                               "seeds": [rep * 10, rep * 10 + 1], "workers": workers,
                               "storage": f"journal:{tmp}/study.journal", "study": f"bench-{workers}"}}
                (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(p))
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "instdiv", "sweep", "-p", f"{tmp}/params.yaml", "--out",
                                f"{tmp}/trials.csv"], check=True, capture_output=True, env={**os.environ, "DVC_ROOT": tmp})
                times[workers].append(time.perf_counter() - start)
    out = {"trials": 4, "steps_per_trial": steps, "cores": cores}
    for w in counts:
        out[f"seconds_{w}x{max(1, cores // w)}"] = round(statistics.median(times[w]), 1)
    if len(counts) > 1:
        out["speedup_processes_over_threads"] = round(statistics.median(times[1]) / statistics.median(times[cores]), 2)
    return out


BENCHES = {"generator": bench_generator, "loader": bench_loader, "lightning": bench_lightning, "kvcache": bench_kvcache,
           "precision": bench_precision, "batch": bench_batch, "sandbox": bench_sandbox, "workers": bench_workers,
           "lora": bench_lora, "hfdecode": bench_hfdecode}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the script, not the speed")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    L.seed_everything(0, verbose=False)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    for name in args.only.split(","):
        results[name] = BENCHES[name](args.quick)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
