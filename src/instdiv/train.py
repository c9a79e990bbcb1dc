"""Train the GPT on the rewrite data with Lightning, tracked in MLflow, resumable after an interruption.

Checkpoints live under `checkpoints/<fingerprint>/`, keyed by the settings and the training data, outside
DVC's outputs (which DVC deletes before rerunning a stage). A run killed half-way is resumed from its
`last.ckpt` into the same MLflow run when the stage runs again with the same settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pyarrow as pa
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanMetric

from instdiv import rewrite, tokenizer as tok
from instdiv.config import ModelConfig, Params, RewriteConfig, TrainConfig
from instdiv.evaluate import MODEL_PATH, TRAIN_INFO, EvalSet, exact_match
from instdiv.model import GPT, GPTConfig
from instdiv.tracking import artifact_location, flatten, git_commit, tracking_uri

CURVES_DIR = Path("reports/plots")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # our ProgressLine says what matters
warnings.filterwarnings("ignore", message=".*(exists and is not empty|LeafSpec|dataloader is not resumable).*")
VAL_SPLITS = ("seen", "unseen")
MONITOR = "val/unseen_op_accuracy"  # every task names its held-out validation split "unseen"


@dataclass
class FitData:
    """What a training run needs from a task: (x, y) training pairs, validation sets whose rows are
    (left-padded prompt, mask, target, is_noop) for greedy exact match, their names, and the GPT's shape."""

    train: TensorDataset
    val: list[TensorDataset]
    val_splits: tuple[str, ...]
    gpt: GPTConfig


class LitGPT(L.LightningModule):
    """The GPT plus what training needs: loss, schedule, and exact-match accuracy on the validation sets."""

    def __init__(self, gpt: dict, train: dict, total_steps: int, val_splits: tuple[str, ...] = VAL_SPLITS):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.model = GPT(GPTConfig(**gpt))
        self.tcfg = TrainConfig(**train)
        self.total_steps = total_steps
        self.val_splits = tuple(val_splits)
        self.acc = torch.nn.ModuleDict({f"{split}_{kind}": MeanMetric() for split in self.val_splits
                                        for kind in ("accuracy", "op_accuracy", "noop_accuracy")})

    def training_step(self, batch, batch_idx):
        x, y = batch
        _, loss = self.model(x.long(), y.long())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        prompts, mask, targets, noop = batch
        correct = exact_match(self.model, prompts, mask, targets).float()
        split = self.val_splits[dataloader_idx]
        self.acc[f"{split}_accuracy"].update(correct)
        if (~noop).any():
            self.acc[f"{split}_op_accuracy"].update(correct[~noop])
        if noop.any():
            self.acc[f"{split}_noop_accuracy"].update(correct[noop])

    def on_validation_epoch_end(self):
        for name, metric in self.acc.items():
            if metric.update_called:
                self.log(f"val/{name}", metric.compute(), prog_bar=name == "unseen_op_accuracy", sync_dist=False)
            metric.reset()

    def configure_optimizers(self):
        opt = self.model.configure_optimizer(self.tcfg.lr, self.tcfg.weight_decay)
        warmup = max(1, int(self.tcfg.warmup_frac * self.total_steps))

        def factor(step: int) -> float:  # linear warmup, then linear decay to 0
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ProgressLine(Callback):
    """One readable line per validation, for logs where a progress bar is noise (DVC, CI, nohup)."""

    def __init__(self, total_steps: int):
        self.total, self.start = total_steps, time.time()

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        get = lambda k: float(m[k]) if k in m else float("nan")  # noqa: E731
        shown = [("seen", "val/seen_accuracy"), ("unseen-op", MONITOR), ("unseen-noop", "val/unseen_noop_accuracy")]
        scores = "  ".join(f"{name} {get(key):.3f}" for name, key in shown if key in m)
        print(f"step {trainer.global_step:>6}/{self.total}  loss {get('train/loss'):.4f}  {scores}  "
              f"[{time.time() - self.start:.0f}s]", flush=True)


def choose_precision(tcfg: TrainConfig, mcfg: ModelConfig) -> str:
    """bf16 autocast where it was measured faster: GPUs, and CPUs from d_model 256 up (benchmarks/README.md)."""
    if tcfg.precision != "auto":
        return tcfg.precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if mcfg.d_model >= 256 else "32-true"


def train_tensors(table, rcfg: RewriteConfig) -> TensorDataset:
    d = table.to_pydict()
    _, block = tok.sequence_lengths(rcfg)
    x, y = tok.training_tensors(tok.prompts(d), d["output"], block)
    # Narrow dtypes: the vocabulary fits a byte and 10^6 rows then take megabytes, not a gigabyte.
    return TensorDataset(x.to(torch.uint8), y.to(torch.int16))


def gpt_config(params: Params) -> GPTConfig:
    return GPTConfig.from_params(params.model, vocab_size=len(tok.VOCAB),
                                 block_size=tok.sequence_lengths(params.rewrite)[1])


def fingerprint(params: Params, manifest: dict) -> str:
    """What determines a training run: model, training settings, the exact training data and the code."""
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py"))))
    key = {"model": dataclasses.asdict(params.model), "train": dataclasses.asdict(params.train),
           "data": manifest["files"]["train"]["sha256"], "code": code.hexdigest()}
    for field in ("accelerator", "devices", "strategy", "checkpoint_dir"):  # where it runs, not what it learns
        key["train"].pop(field)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build_trainer(tcfg: TrainConfig, mcfg: ModelConfig, total_steps: int, logger=False, callbacks=(),
                  **overrides) -> L.Trainer:
    kwargs = dict(
        max_steps=total_steps, accelerator=tcfg.accelerator, devices=tcfg.devices, strategy=tcfg.strategy,
        precision=choose_precision(tcfg, mcfg), gradient_clip_val=tcfg.grad_clip or None,
        val_check_interval=min(tcfg.val_every_steps, total_steps), check_val_every_n_epoch=None,
        log_every_n_steps=min(50, tcfg.val_every_steps), logger=logger, callbacks=list(callbacks),
        enable_model_summary=False, num_sanity_val_steps=0, enable_progress_bar=sys.stderr.isatty(),
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def rewrite_data(params: Params, tables: dict[str, pa.Table]) -> FitData:
    """The rewrite task's training data: validation on new inputs of seen rules and on unseen rules."""
    val = [TensorDataset(*EvalSet.from_table(tables[f"valid_{s}"], params.rewrite).tensors()) for s in VAL_SPLITS]
    return FitData(train_tensors(tables["train"], params.rewrite), val, VAL_SPLITS, gpt_config(params))


def loaders(tcfg: TrainConfig, data: FitData) -> tuple[DataLoader, list[DataLoader]]:
    gen = torch.Generator().manual_seed(tcfg.seed)
    train_loader = DataLoader(data.train, batch_size=tcfg.batch_size, shuffle=True, drop_last=False, generator=gen)
    return train_loader, [DataLoader(v, batch_size=512) for v in data.val]


def read_tables(data_dir: Path = rewrite.DATA_DIR) -> tuple[dict[str, pa.Table], dict]:
    """Every split, each checked against the manifest's SHA-256: a corrupt file stops here, not mid-run."""
    manifest = rewrite.read_manifest(data_dir)
    return {name: rewrite.read_split(name, data_dir, manifest) for name in manifest["files"]}, manifest


def fit(params: Params, data: FitData, logger, ckpt_dir: Path, resume: bool = False,
        callbacks=(), verbose: bool = True) -> tuple[GPT | None, dict]:
    """Train on in-memory data; return the best model on `MONITOR` (None off rank zero) and what happened.

    Used by the `train` stage, every sweep trial and the code-model stages. `ckpt_dir` holds best.ckpt and
    last.ckpt; with `resume`, training continues from last.ckpt.
    """
    mcfg, tcfg = params.model, params.train
    train_loader, val_loaders = loaders(tcfg, data)
    total_steps = tcfg.total_steps(len(train_loader.dataset))
    last = ckpt_dir / "last.ckpt"
    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    lit = LitGPT(dataclasses.asdict(data.gpt), dataclasses.asdict(tcfg), total_steps, data.val_splits)
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=MONITOR, mode="max",
                           enable_version_counter=False)
    # A separate callback for "last": save_last only writes when the best one improved.
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, enable_version_counter=False)
    progress = [ProgressLine(total_steps)] if verbose else []
    trainer = build_trainer(tcfg, mcfg, total_steps, logger=logger,
                            callbacks=[ckpt, latest, *progress, *callbacks])
    if verbose:
        print(f"training {lit.model.num_params():,} parameters for {total_steps} steps on "
              f"{len(train_loader.dataset):,} examples ({trainer.precision}, "
              f"{trainer.accelerator.__class__.__name__})" + (f"; resuming {last}" if resume else ""), flush=True)
    start = time.time()
    trainer.fit(lit, train_loader, val_loaders, ckpt_path=str(last) if resume else None)
    info = {"steps": trainer.global_step, "total_steps": total_steps,
            "fit_seconds": round(time.time() - start, 1),
            "best_score": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
            "precision": str(trainer.precision)}
    if not trainer.is_global_zero:
        return None, info
    best_path = ckpt.best_model_path or str(last)
    best = LitGPT.load_from_checkpoint(best_path, map_location="cpu", weights_only=True).model
    info.update(best_checkpoint=Path(best_path).name, parameters=best.num_params())
    return best, info


def train(params: Params, data_dir: Path = rewrite.DATA_DIR) -> dict:
    """The `train` stage: resume an interrupted run with the same settings; write models/ and the curves."""
    rcfg, mcfg, tcfg = params.rewrite, params.model, params.train
    tables, manifest = read_tables(data_dir)
    fp = fingerprint(params, manifest)
    ckpt_dir = Path(tcfg.checkpoint_dir) / fp
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_file = ckpt_dir / "run.json"
    # Resume only an interrupted run; a finished one rerun (dvc repro -f) trains afresh in a new MLflow run.
    state = json.loads(run_file.read_text()) if run_file.is_file() else {}
    resume = (ckpt_dir / "last.ckpt").is_file() and "run_id" in state and not state.get("finished", False)

    uri = tracking_uri(params.tracking)
    logger = MLFlowLogger(experiment_name=params.tracking.experiment, tracking_uri=uri,
                          run_id=state["run_id"] if resume else None,
                          artifact_location=artifact_location(uri, params.tracking.experiment),
                          run_name=f"rewrite-I{rcfg.n_instructions}-seed{tcfg.seed}",
                          tags={"git_commit": git_commit(), "holdout": rcfg.holdout, "fingerprint": fp,
                                **{f"data.{k}.sha256": v["sha256"] for k, v in manifest["files"].items()}})
    run_id = logger.run_id
    run_file.write_text(json.dumps({"run_id": run_id, "finished": False}) + "\n")
    if not resume:
        logger.log_hyperparams({**flatten(dataclasses.asdict(params)),
                                "train.total_steps": tcfg.total_steps(tables["train"].num_rows),
                                "train.precision_used": choose_precision(tcfg, mcfg)})
        log_datasets(run_id, tables, {k: v["sha256"] for k, v in manifest["files"].items()}, data_dir)

    best, info = fit(params, rewrite_data(params, tables), logger, ckpt_dir, resume)
    if best is None:
        return {}
    run_file.write_text(json.dumps({"run_id": run_id, "finished": True}) + "\n")
    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dataclasses.asdict(best.cfg), "state_dict": best.state_dict()}, MODEL_PATH)
    info = {"run_id": run_id, "tracking_uri_kind": uri.split(":")[0], "fingerprint": fp, **info}
    TRAIN_INFO.write_text(json.dumps(info, indent=2) + "\n")
    _write_curves(logger.experiment, run_id)
    _log_model(run_id, best)
    return info


def log_datasets(run_id: str, tables: dict[str, pa.Table], digests: dict[str, str], data_dir: Path,
                 task: str = "rewrite") -> None:
    """The splits as MLflow run inputs, identified by the SHA-256 of their Parquet files in `data_dir`."""
    import mlflow

    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's musings on source kinds and integer columns
        for name, table in tables.items():
            ds = mlflow.data.from_pandas(table.to_pandas(), source=str((data_dir / f"{name}.parquet").resolve()),
                                         name=f"{task}/{name}", digest=digests[name][:16])
            mlflow.log_input(ds, context="training" if name == "train" else name)


class LogitsOnly(torch.nn.Module):
    """The GPT as one tensor in, one tensor out: the form MLflow's pickle-free pt2 export takes."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt

    def forward(self, idx):
        return self.gpt(idx)[0]


def _log_model(run_id: str, model: GPT) -> None:
    import mlflow
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    t, v = model.cfg.block_size, model.cfg.vocab_size
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, t))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, t, v))]))
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        mlflow.log_artifact(str(MODEL_PATH), "weights")
        mlflow.pytorch.log_model(LogitsOnly(model.float().eval()), name="model", serialization_format="pt2",
                                 input_example=np.zeros((2, t), dtype=np.int64), signature=signature,
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


def _write_curves(client, run_id: str) -> None:
    """DVC plot data from the run's own metric history, so a resumed run still has its whole curve."""
    import pandas as pd

    CURVES_DIR.mkdir(parents=True, exist_ok=True)
    val = {}
    for key in ("seen_accuracy", "unseen_accuracy", "unseen_op_accuracy", "unseen_noop_accuracy"):
        for m in client.get_metric_history(run_id, f"val/{key}"):
            val.setdefault(m.step, {"step": m.step})[key] = m.value
    pd.DataFrame(sorted(val.values(), key=lambda r: r["step"])).to_csv(CURVES_DIR / "val_accuracy.csv",
                                                                       index=False)
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    pd.DataFrame(loss, columns=["step", "loss"]).to_csv(CURVES_DIR / "train_loss.csv", index=False)
