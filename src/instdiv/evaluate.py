"""Exact-match accuracy on seen and unseen instructions, by batched greedy decoding over a KV cache.

The headline is `unseen_op_accuracy`: a model that memorised its rules still copies every unseen no-op
input right, so overall unseen accuracy floors at the no-op share, not at 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from instdiv import rewrite, tokenizer as tok
from instdiv.config import EvaluateConfig, RewriteConfig
from instdiv.model import GPT, GPTConfig

MODEL_PATH = Path("models/model.pt")
TRAIN_INFO = Path("models/train.json")
METRICS_PATH = Path("reports/metrics.json")
PREDICTIONS_PATH = Path("reports/predictions.csv")


@dataclass
class EvalSet:
    prompts: torch.Tensor  # (n, prompt width), left-padded
    mask: torch.Tensor  # (n, prompt width), True on real tokens
    targets: torch.Tensor  # (n, max output + 1): output, EOS, then padding
    is_noop: torch.Tensor  # (n,)

    @classmethod
    def from_table(cls, table: pa.Table, cfg: RewriteConfig) -> "EvalSet":
        d = table.to_pydict()
        width, _ = tok.sequence_lengths(cfg)
        return cls.from_texts(tok.prompts(d), d["output"], width, cfg.max_output_length + 1, d["is_noop"])

    @classmethod
    def from_texts(cls, prompts: list[str], outputs: list[str], width: int, n_out: int, is_noop=None,
                   encoder=tok.encode_padded) -> "EvalSet":
        """Prompts left-padded to `width`; outputs plus EOS right-padded to `n_out` tokens."""
        ids, mask = tok.prompt_tensors(prompts, width, encoder)
        targets = encoder(outputs, n_out)
        targets[np.arange(len(outputs)), (targets != tok.PAD_ID).sum(1)] = tok.EOS_ID
        noop = torch.zeros(len(outputs), dtype=torch.bool) if is_noop is None else torch.tensor(is_noop)
        return cls(ids, mask, torch.from_numpy(targets), noop)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.prompts, self.mask, self.targets, self.is_noop


def greedy(model: GPT, prompts, mask, n_new: int) -> torch.Tensor:
    """Greedy outputs padded to exactly n_new tokens, comparable with EvalSet.targets."""
    out = model.generate(prompts, mask, n_new, tok.EOS_ID, tok.PAD_ID)
    return torch.nn.functional.pad(out, (0, n_new - out.size(1)), value=tok.PAD_ID)


def exact_match(model: GPT, prompts, mask, targets) -> torch.Tensor:
    return (greedy(model, prompts, mask, targets.size(1)) == targets).all(1)


def accuracies(correct: torch.Tensor, is_noop: torch.Tensor) -> dict[str, float]:
    def mean(x):
        return round(float(x.double().mean()), 4) if x.numel() else float("nan")

    return {"accuracy": mean(correct), "op_accuracy": mean(correct[~is_noop]),
            "noop_accuracy": mean(correct[is_noop])}


@torch.no_grad()
def predict(model: GPT, es: EvalSet, batch_size: int, device) -> torch.Tensor:
    """Greedy outputs for a whole set, in batches."""
    model.eval()
    outs = []
    n_new = es.targets.size(1)
    for i in range(0, len(es.prompts), batch_size):
        p, m = es.prompts[i:i + batch_size].to(device), es.mask[i:i + batch_size].to(device)
        outs.append(greedy(model, p, m, n_new).cpu())
    return torch.cat(outs) if outs else es.targets[:0]


def load_model(path: Path = MODEL_PATH, device="cpu", stage: str = "train") -> GPT:
    return load_checkpoint(path, device, stage)[0]


def load_checkpoint(path: Path, device="cpu", stage: str = "train") -> tuple[GPT, dict]:
    """The model in a file we wrote, and the file's other entries (e.g. the prompt width of a code model)."""
    from instdiv.errors import DataError

    if not path.is_file():
        raise DataError(f"{path} not found; train first: dvc repro {stage}")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        model = GPT(GPTConfig(**blob.pop("config")))
        model.load_state_dict(blob.pop("state_dict"))
    except Exception as exc:  # a truncated or foreign file: say which and how to rebuild it
        raise DataError(f"{path} is not a model this version can read ({exc}); retrain: dvc repro -f {stage}") \
            from None
    return model.to(device).eval(), blob


def score(model: GPT, tables: dict[str, pa.Table], cfg: RewriteConfig, batch_size: int, device,
          n_samples: int = 0):
    """Metrics `<split>_accuracy`, `<split>_op_accuracy`, `<split>_noop_accuracy` for each table, and a
    sample of `n_samples` predictions per table."""
    import pandas as pd

    metrics, samples = {}, []
    rng = np.random.default_rng(0)
    for name, table in tables.items():
        es = EvalSet.from_table(table, cfg)
        pred = predict(model, es, batch_size, device)
        correct = (pred == es.targets).all(1)
        for key, value in accuracies(correct, es.is_noop).items():
            metrics[f"{name}_{key}"] = value
        metrics[f"{name}_examples"] = len(correct)
        if n_samples:
            pick = np.sort(rng.permutation(len(correct))[:n_samples])
            sub = table.take(pa.array(pick)).to_pandas()
            sub.insert(0, "split", name)
            sub["predicted"] = [tok.decode(pred[i]) for i in pick.tolist()]
            sub["correct"] = correct[pick].numpy()
            samples.append(sub)
    return metrics, (pd.concat(samples) if samples else pd.DataFrame())


def evaluate(rcfg: RewriteConfig, ecfg: EvaluateConfig, uri: str | None = None) -> dict:
    """The `evaluate` stage: score every test split; write metrics and a sample of predictions."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    manifest = rewrite.read_manifest()
    tables = rewrite.test_sets({name: rewrite.read_split(name, manifest=manifest) for name in manifest["files"]
                                if name.startswith("test_")})
    model = load_model(device=device)
    metrics, samples = score(model, tables, rcfg, ecfg.batch_size, device, ecfg.n_samples)
    METRICS_PATH.parent.mkdir(parents=True, exist_ok=True)
    METRICS_PATH.write_text(json.dumps(metrics, indent=2) + "\n")
    samples.to_csv(PREDICTIONS_PATH, index=False)
    if uri is not None:
        _log_to_run(uri, metrics)
    return metrics


def _log_to_run(uri: str, metrics: dict) -> None:
    """Add the test metrics and files to the training run, so one MLflow run tells the whole story."""
    import mlflow

    if not TRAIN_INFO.is_file():
        return
    run_id = json.loads(TRAIN_INFO.read_text())["run_id"]
    client = mlflow.MlflowClient(uri)
    for key, value in metrics.items():
        client.log_metric(run_id, f"test/{key}", value)
    client.log_artifact(run_id, str(METRICS_PATH), "evaluation")
    client.log_artifact(run_id, str(PREDICTIONS_PATH), "evaluation")


def headline(metrics: dict) -> str:
    return (f"seen accuracy {metrics['seen_accuracy']:.3f} | unseen accuracy {metrics['unseen_accuracy']:.3f} "
            f"(op {metrics['unseen_op_accuracy']:.3f}, no-op {metrics['unseen_noop_accuracy']:.3f})")
