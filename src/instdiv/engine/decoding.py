"""Batched greedy decoding through the model's `generate` (a KV cache for the GPT), exact match against the
targets, and text completion for tasks that judge outputs otherwise (running code).

Exact match compares token ids, EOS included, so an output that runs on past its end is wrong.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from instdiv.engine.text import EvalSet, Tokenizer, prompt_tensors


def greedy(model, prompts, mask, n_new: int, tok: Tokenizer, temperature: float = 0.0) -> torch.Tensor:
    """Greedy (or, with a temperature, sampled) outputs padded to exactly n_new tokens, comparable with
    EvalSet.targets."""
    sampling = {"temperature": temperature} if temperature > 0 else {}
    out = model.generate(prompts, mask, n_new, tok.eos_id, tok.pad_id, **sampling)
    return torch.nn.functional.pad(out, (0, n_new - out.size(1)), value=tok.pad_id)


def exact_match(model, prompts, mask, targets, tok: Tokenizer) -> torch.Tensor:
    return (greedy(model, prompts, mask, targets.size(1), tok) == targets).all(1)


@torch.no_grad()
def predict(model, es: EvalSet, tok: Tokenizer, batch_size: int, device) -> torch.Tensor:
    """Greedy outputs for a whole set, in batches."""
    model.eval()
    outs = []
    n_new = es.targets.size(1)
    with low_precision(device):
        for i in range(0, len(es.prompts), batch_size):
            p, m = es.prompts[i:i + batch_size].to(device), es.mask[i:i + batch_size].to(device)
            outs.append(greedy(model, p, m, n_new, tok).cpu())
    return torch.cat(outs) if outs else es.targets[:0]


def low_precision(device):
    """bf16 autocast for decoding on a GPU that has it, as training validates there (Lightning's bf16-mixed);
    nothing on a CPU, where fp32 was measured faster at these sizes."""
    dev = torch.device(device)
    on = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=on)


def accuracies(correct: torch.Tensor, group: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
    """Overall exact match and one per group: accuracy, <group>_accuracy (NaN where a group has no row)."""
    def mean(x):
        return round(float(x.double().mean()), 4) if x.numel() else float("nan")

    return {"accuracy": mean(correct), **{f"{g}_accuracy": mean(correct[group == i]) for i, g in enumerate(names)}}


def exact_match_scores(task, model, tok: Tokenizer, tables: dict[str, pa.Table], width: int, batch_size: int,
                       device, n_samples: int = 0):
    """Metrics `<split>_accuracy`, `<split>_<group>_accuracy` and `<split>_examples` for each table, and a
    sample of `n_samples` predictions per table."""
    import pandas as pd

    metrics, samples = {}, []
    rng = np.random.default_rng(0)
    n_out = model.block_size - width + 1
    for name, table in tables.items():
        ex = task.examples(table)
        es = EvalSet.build(tok, ex.prompts, ex.targets, width, n_out, ex.groups, task.groups)
        pred = predict(model, es, tok, batch_size, device)
        correct = (pred == es.targets).all(1)
        for key, value in accuracies(correct, es.group, task.groups).items():
            if value == value:  # a group without rows (no no-ops in the data) has no score
                metrics[f"{name}_{key}"] = value
        # A continuous measure beside exact match: the share of each target's tokens (EOS included) that the
        # output has at the same position, so a report can say whether a transition is sharp in it too.
        real = es.targets != tok.pad_id
        share = ((pred == es.targets) & real).sum(1) / real.sum(1).clamp(min=1)
        for key, value in accuracies(share, es.group, task.groups).items():
            if value == value:
                metrics[f"{name}_{key.removesuffix('accuracy')}token_accuracy"] = value
        metrics[f"{name}_examples"] = len(correct)
        if n_samples:
            pick = np.sort(rng.permutation(len(correct))[:n_samples])
            sub = table.take(pa.array(pick)).to_pandas()
            sub.insert(0, "split", name)
            sub["predicted"] = [tok.decode(pred[i]) for i in pick.tolist()]
            sub["correct"] = correct[pick].numpy()
            samples.append(sub)
    return metrics, (pd.concat(samples) if samples else pd.DataFrame())


def complete(model, tok: Tokenizer, prompts: list[str], width: int, batch_size: int, device,
             temperature: float = 0.0, seed: int = 0) -> list[str]:
    """Greedy responses as text (sampled at `temperature` > 0, the same samples for the same seed); a prompt
    longer than any seen in training gets ""."""
    if temperature <= 0:
        return _complete(model, tok, prompts, width, batch_size, device, 0.0)
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):  # the caller's random state is kept
        torch.manual_seed(seed)
        return _complete(model, tok, prompts, width, batch_size, device, temperature)


@torch.no_grad()
def _complete(model, tok: Tokenizer, prompts: list[str], width: int, batch_size: int, device,
              temperature: float) -> list[str]:
    n_new = model.block_size - width + 1
    fits = [i for i, n in enumerate(tok.lengths(tok.prompts(prompts)).tolist()) if n <= width]
    ids, mask = prompt_tensors(tok, [prompts[i] for i in fits], width)
    model.eval()
    written = [""] * len(prompts)
    with low_precision(device):
        for start in range(0, len(fits), batch_size):
            out = greedy(model, ids[start:start + batch_size].to(device), mask[start:start + batch_size].to(device),
                         n_new, tok, temperature).cpu()
            for row, i in zip(out, fits[start:start + batch_size]):
                written[i] = tok.decode(row)
    return written
