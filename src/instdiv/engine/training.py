"""Training with Lightning: one LightningModule that receives its network, one `fit`, and the one place that
chooses the device and the precision and builds the trainer, its checkpoints and callbacks.

Checkpoints live in a directory the caller names (keyed by the settings and the data), outside DVC's
outputs, which DVC deletes before rerunning a stage; with `resume` training continues from its last.ckpt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import BatchSampler, DataLoader, Sampler, TensorDataset
from torchmetrics import MeanMetric

from instdiv.config import TrainConfig
from instdiv.engine import text
from instdiv.engine.decoding import exact_match
from instdiv.errors import ConfigError

log = logging.getLogger(__name__)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # our ProgressLine says what matters
warnings.filterwarnings("ignore", message=".*(exists and is not empty|LeafSpec|dataloader is not resumable).*")


def device() -> str:
    """Where evaluation runs: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class FitData:
    """A training run's data: (x, y) training pairs and named validation sets (EvalSet tensors)."""

    train: TensorDataset
    val: dict[str, TensorDataset]
    width: int  # prompt width of the validation sets (and of decoding later)
    block_size: int
    groups: tuple[str, ...] = ()  # row groups scored on their own in validation

    def val_metrics(self) -> list[str]:
        """The validation metrics a run logs (as val/<name>): each split's accuracy, and each group's."""
        kinds = ("accuracy", *(f"{g}_accuracy" for g in self.groups))
        return [f"{split}_{kind}" for split in self.val for kind in kinds]


def _fitting(tok: text.Tokenizer, ex, limit: int, prompt_limit: int | None = None):
    """The rows of `ex` whose prompt, response and EOS take at most `limit` tokens (and whose prompt at most
    `prompt_limit`), and how many were dropped."""
    lp, lr = tok.lengths(tok.prompts(ex.prompts)), tok.lengths(ex.targets)
    keep = (lp + lr + 1 <= limit) & (lp <= (prompt_limit or limit))
    rows = [i for i, k in enumerate(keep.tolist()) if k]
    if len(rows) == len(keep):
        return ex, 0
    pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
    return type(ex)(pick(ex.prompts), pick(ex.targets), pick(ex.groups)), len(keep) - len(rows)


def fit_data(task, tok: text.Tokenizer, params, tables: dict) -> FitData:
    """A task's training rows and validation splits as tensors, shaped by the task (and cut to
    train.max_length: longer rows are dropped, and counted)."""
    width, block = task.shape(params, tables, tok)
    limit = params.train.max_length
    if limit is not None:
        width, block = min(width, limit - 1), min(block, limit)
    train = task.examples(task.training_table(params, tables))
    if limit is not None:
        train, dropped = _fitting(tok, train, block)
        if dropped:
            log.info("train.max_length=%d: %d of %d training rows are longer and left out", limit, dropped,
                     dropped + len(train.prompts))
        if not train.prompts:
            raise ConfigError(f"train.max_length={limit}: no training row fits; raise it")
    x, y = text.training_tensors(tok, train.prompts, train.targets, block)
    val = {}
    for name, table in task.validation(params, tables).items():
        ex = task.examples(table)
        if limit is not None:
            ex, _ = _fitting(tok, ex, block, width)
        es = text.EvalSet.build(tok, ex.prompts, ex.targets, width, block - width + 1, ex.groups, task.groups)
        val[name] = TensorDataset(*es.tensors())
    return FitData(TensorDataset(x, y), val, width, block, task.groups)


class LitCausalLM(L.LightningModule):
    """A network plus what training needs: loss, schedule, and exact match on the validation sets."""

    def __init__(self, network: torch.nn.Module, tcfg: TrainConfig, total_steps: int, tok: text.Tokenizer,
                 data: FitData):
        super().__init__()
        self.network, self.tcfg, self.total_steps, self.tok = network, tcfg, total_steps, tok
        self.val_splits, self.groups = tuple(data.val), data.groups
        self.acc = torch.nn.ModuleDict({name: MeanMetric() for name in data.val_metrics()})
        # The training forward, compiled when train.compile asks (kept out of the module's attributes, so the
        # checkpoint holds the network's own parameter names); validation decodes with the eager network.
        self.step_fn = {"forward": self.network}

    def on_fit_start(self):
        if self.tcfg.compile != "none":
            self.step_fn["forward"] = torch.compile(self.network, mode=self.tcfg.compile, dynamic=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        _, loss = self.step_fn["forward"](x.long(), y.long())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        prompts, mask, targets, group = batch
        correct = exact_match(self.network, prompts, mask, targets, self.tok).float()
        split = self.val_splits[dataloader_idx]
        self.acc[f"{split}_accuracy"].update(correct)
        for i, g in enumerate(self.groups):
            if (group == i).any():
                self.acc[f"{split}_{g}_accuracy"].update(correct[group == i])

    def on_validation_epoch_end(self):
        for name, metric in self.acc.items():
            if metric.update_called:
                self.log(f"val/{name}", metric.compute(), sync_dist=False)
            metric.reset()

    def configure_optimizers(self):
        from instdiv.engine import optim

        opt = optim.build(self.network, self.tcfg.optimizer, self.tcfg.lr, self.tcfg.weight_decay)
        warmup = max(1, int(self.tcfg.warmup_frac * self.total_steps))

        def factor(step: int) -> float:  # linear warmup, then linear decay to 0
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ProgressLine(Callback):
    """One readable line per validation, for logs where a progress bar is noise (DVC, CI, nohup)."""

    def __init__(self, total_steps: int, monitor: str):
        self.total, self.monitor, self.start = total_steps, monitor, time.time()

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        shown = [k for k in m if k.startswith("val/") and k.endswith("_accuracy")
                 and not any(k.endswith(f"_{g}_accuracy") for g in pl_module.groups)] + [f"val/{self.monitor}"]
        scores = "  ".join(f"{k.removeprefix('val/').removesuffix('_accuracy').replace('_', '-')} {float(m[k]):.3f}"
                           for k in dict.fromkeys(shown) if k in m)
        loss = float(m["train/loss"]) if "train/loss" in m else float("nan")
        print(f"step {trainer.global_step:>6}/{self.total}  loss {loss:.4f}  {scores}  "
              f"[{time.time() - self.start:.0f}s]", flush=True)


def flops_per_token(network, x: torch.Tensor, y: torch.Tensor) -> float:
    """Training FLOPs per token of the batch (x, y): the forward pass counted by torch's FlopCounterMode, and
    the backward as twice the forward (nanoGPT's 6N + 12LTd per token, within 2% for the GPT). The extra
    forward changes nothing: no gradients, and the random state (dropout) is restored."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), counter:
        network(x.long(), y.long())
    return 3 * counter.get_total_flops() / x.numel()


class SpeedMonitor(Callback):
    """Training speed, logged every `every` steps: perf/tokens_per_second (the training batches' tokens,
    padding included), perf/step_ms and perf/tflops (model FLOPs: 3 x the forward pass's, counted once by torch's
    FlopCounterMode on the first batch), and perf/mfu where Lightning knows the device's peak for this precision
    (its table of GPUs; benchmarks/ measure the peak instead). The GPU is synchronized only when it logs;
    validation time is left out."""

    def __init__(self, every: int):
        self.every, self.flops, self.peak = every, None, None
        self.start, self.tokens, self.steps = None, 0, 0

    def on_train_start(self, trainer, pl_module):
        from lightning.fabric.utilities.throughput import get_available_flops

        dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(str(trainer.precision).split("-")[0], torch.float32)
        self.peak = get_available_flops(pl_module.device, dtype)

    def _sync(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.flops is None:
            self.flops = flops_per_token(pl_module.network, *batch)
        if self.start is None:
            self._sync(pl_module)
            self.start, self.tokens, self.steps = time.perf_counter(), 0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.tokens += batch[0].numel()
        self.steps += 1
        if trainer.global_step % self.every:
            return
        self._sync(pl_module)
        seconds = time.perf_counter() - self.start
        rate = self.tokens / seconds
        metrics = {"perf/tokens_per_second": rate, "perf/step_ms": 1000 * seconds / self.steps,
                   "perf/tflops": rate * self.flops / 1e12}
        if self.peak:
            metrics["perf/mfu"] = rate * self.flops / self.peak
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        self.start = None

    def on_validation_start(self, trainer, pl_module):
        self.start = None  # the window in progress is dropped: it would count validation as training time


def check_device(tcfg: TrainConfig) -> None:
    """Fail with one line, before any data is built, when train asks for a device this machine lacks."""
    acc = str(tcfg.accelerator).lower()
    known = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
    if acc not in known:
        raise ConfigError(f"train.accelerator={tcfg.accelerator}: unknown; use one of {', '.join(known)}")
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator={tcfg.accelerator}: no CUDA GPU is visible on this machine "
                          "(torch.cuda.is_available() is False); set train.accelerator: auto (a GPU where there is "
                          "one) or cpu")
    if acc == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.accelerator=mps: no Apple GPU here; set train.accelerator: auto or cpu")
    gpus = torch.cuda.device_count() if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 0
    if gpus and isinstance(tcfg.devices, int) and tcfg.devices > gpus:
        raise ConfigError(f"train.devices={tcfg.devices}: this machine has {gpus} GPU(s); lower train.devices "
                          "or use auto")


def check_compile(tcfg: TrainConfig) -> None:
    """Fail with one line, before any data is built, when train.compile asks for what this machine cannot do:
    torch.compile's default backend writes Triton kernels on a GPU and C++ on a CPU."""
    if tcfg.compile == "none":
        return
    if torch.cuda.is_available() and str(tcfg.accelerator).lower() != "cpu":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError(f"train.compile={tcfg.compile}: torch.compile needs Triton on a GPU and it is not "
                              "installed; pip install triton (the version your torch names) or set train.compile: none")
    else:
        import shutil

        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            raise ConfigError(f"train.compile={tcfg.compile}: torch.compile on a CPU needs a C++ compiler and none "
                              "was found (g++, c++, clang++); install one or set train.compile: none")
        if tcfg.compile == "reduce-overhead":
            raise ConfigError("train.compile=reduce-overhead adds CUDA graphs, and this run is on a CPU; use "
                              "train.compile: default (or none)")


def choose_precision(tcfg: TrainConfig, family, mcfg) -> str:
    """bf16 autocast where it was measured faster: GPUs, and CPUs where the model family says so."""
    if tcfg.precision != "auto":
        return tcfg.precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if family.cpu_bf16(mcfg) else "32-true"


def fingerprint(params, data_sha256: str) -> str:
    """What determines a training run: the model (a pretrained base's files included), the training settings,
    the exact training data and the package's code."""
    from instdiv import registry

    package = Path(__file__).resolve().parents[1]
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(package.rglob("*.py"))))
    key = {"model": params.model.model_dump(), "train": params.train.model_dump(exclude=set(TrainConfig.PLACEMENT)),
           "data": data_sha256, "code": code.hexdigest()}
    identity = registry.family(params.model.kind).identity(params.model)
    if identity:  # only where there is one: the GPT's fingerprints (and its checkpoints) stay what they were
        key["identity"] = identity
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def world_size(tcfg: TrainConfig) -> int:
    """Training processes: one unless train.devices asks for more (then DDP, one per device)."""
    devices = tcfg.devices
    if isinstance(devices, str):
        devices = int(devices) if devices.isdigit() else len(devices.split(",")) if "," in devices else 1
    if devices == -1:  # Lightning's "every GPU"
        devices = torch.cuda.device_count() if torch.cuda.is_available() else 1
    return max(1, devices)


def global_rank() -> int:
    """This process's rank: 0 unless Lightning's DDP launched it as another rank."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank or 0


def log_interval(tcfg: TrainConfig, epoch_batches: int | None) -> int:
    """Steps between logged training metrics: 50, or fewer when validations are closer or, since Lightning
    warns when an epoch has fewer batches than the interval (small N), at least once an epoch."""
    return min(50, tcfg.val_every_steps, max(1, epoch_batches or 50))


def build_trainer(tcfg: TrainConfig, precision: str, total_steps: int, logger=False, callbacks=(),
                  epoch_batches: int | None = None, **overrides) -> L.Trainer:
    log_every = log_interval(tcfg, epoch_batches)
    kwargs = dict(
        max_steps=total_steps, accelerator=tcfg.accelerator, devices=world_size(tcfg), strategy=tcfg.strategy,
        # Each rank takes its share of the training order itself (EpochOrder) and validates on the full sets:
        # no DistributedSampler, so no padded duplicate rows in the scores and every rank in step.
        use_distributed_sampler=False,
        precision=precision, gradient_clip_val=tcfg.grad_clip or None,
        val_check_interval=min(tcfg.val_every_steps, total_steps), check_val_every_n_epoch=None,
        log_every_n_steps=log_every, logger=logger, callbacks=list(callbacks),
        enable_model_summary=False, num_sanity_val_steps=0, enable_progress_bar=sys.stderr.isatty(),
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


class EpochOrder(Sampler):
    """The shuffled order of `shuffle=True` with a seeded generator (the same indices, the same draws of the
    generator), that can restart mid-epoch: it remembers the generator's state at the start of each epoch,
    and `resume` replays that epoch's permutation from a given position."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)
        self.rank, self.world = rank, world
        self.epoch_start = self.generator.get_state()
        self._resume: tuple[torch.Tensor, int] | None = None

    def __len__(self) -> int:
        return self.n if self.world == 1 else self.n // self.world

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            (state, skip), self._resume = self._resume, None
            self.generator.set_state(state)
        self.epoch_start = self.generator.get_state()
        order = torch.randperm(self.n, generator=self.generator).tolist()
        if self.world > 1:  # this rank's share, the same length on every rank (the remainder is left out)
            order = order[self.rank::self.world][: len(self)]
        if skip >= len(order):
            return  # an epoch resumed at its end: the run it continues never asked past it
        yield from order[skip:]
        # Asked past the end (a plain loop; Lightning stops at the loader's length), RandomSampler draws and
        # drops one more permutation.
        torch.randperm(self.n, generator=self.generator)

    def resume(self, epoch_start: torch.Tensor, done: int) -> None:
        """Continue the epoch that began at generator state `epoch_start` after its first `done` indices. An
        epoch that had ended yields nothing more (Lightning still opens it, then starts the next one), and
        the generator then stands where the uninterrupted run's stood."""
        self._resume = (epoch_start, done)


class ResumePoint(Callback):
    """What Lightning's checkpoint lacks for an exact resume: where in its epoch the data order was (batches
    already trained on, not those prefetched) and the random generators' states."""

    def __init__(self, order: EpochOrder, batch_size: int):
        self.order, self.batch_size = order, batch_size

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["instdiv_resume"] = {  # tensors and plain values only: loadable with weights_only=True
            "epoch_start": self.order.epoch_start, "samples_done": done * self.batch_size,
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint.get("instdiv_resume")
        if state is None:
            return
        self.order.resume(state["epoch_start"], state["samples_done"])
        for cb in trainer.checkpoint_callbacks:  # Lightning restores its best scores but not the current one
            saved = checkpoint.get("callbacks", {}).get(cb.state_key, {})
            if saved.get("current_score") is not None:
                cb.current_score = saved["current_score"]
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def loaders(tcfg: TrainConfig, data: FitData, eval_batch: int) -> tuple[DataLoader, list[DataLoader]]:
    """Loaders that index whole batches (`tensor[indices]`, no per-row collate): the rows of the training
    order's batches, unchanged, at a cost that does not grow with the batch, and on the GPU too once
    `DataOnDevice` has put the tensors there. The training loader's `order` is its EpochOrder."""
    order = EpochOrder(len(data.train), tcfg.seed, global_rank(), world_size(tcfg))
    # The loader draws its workers' base seed from the same generator, as with shuffle=True.
    train_loader = DataLoader(data.train, sampler=BatchSampler(order, tcfg.batch_size, drop_last=False),
                              batch_size=None, generator=order.generator)
    train_loader.order = order
    val = [DataLoader(v, sampler=BatchSampler(range(len(v)), eval_batch, drop_last=False), batch_size=None)
           for v in data.val.values()]
    return train_loader, val


class LearnedAt(Callback):
    """The first validation at which the score on the training rules reaches evaluate.learned_at: the steps and
    the training seconds a recipe takes to learn its rules (benchmarks/README.md compares recipes by it). Kept
    in the checkpoint, so a resumed run reports what an uninterrupted one would."""

    def __init__(self, metric: str, bar: float):
        self.metric, self.bar = metric, bar
        self.step = self.seconds = None
        self.elapsed, self.since = 0.0, None

    def on_train_start(self, trainer, pl_module):
        self.since = time.time()

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.metric)
        if self.step is None and value is not None and float(value) >= self.bar and not trainer.sanity_checking:
            self.step = trainer.global_step
            self.seconds = round(self.elapsed + time.time() - (self.since or time.time()), 1)

    def state_dict(self):
        elapsed = self.elapsed + (time.time() - self.since if self.since else 0.0)
        return {"step": self.step, "seconds": self.seconds, "elapsed": elapsed}

    def load_state_dict(self, state):
        self.step, self.seconds, self.elapsed = state["step"], state["seconds"], state["elapsed"]


class DataOnDevice(Callback):
    """Moves the training and validation tensors to the GPU once, when training starts there: the datasets are
    small integer tensors, and a batch is then an index into GPU memory, with no copy per step."""

    def __init__(self, datasets: list[TensorDataset]):
        self.datasets = datasets

    def on_fit_start(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            for ds in self.datasets:
                ds.tensors = tuple(t.to(pl_module.device) for t in ds.tensors)

    def on_fit_end(self, trainer, pl_module):  # callers read the data on the CPU afterwards
        for ds in self.datasets:
            ds.tensors = tuple(t.cpu() for t in ds.tensors)


def fit(params, task, tok: text.Tokenizer, data: FitData, logger, ckpt_dir: Path, resume: bool = False,
        callbacks=(), verbose: bool = True):
    """Train the model `params.model` describes on in-memory data; return the network with its final weights
    (None off rank zero), its family, and what happened.

    The final weights, not the best on some validation score: the schedule decays to 0, so the end is where
    training converged, and choosing on unseen validation would tune the model to the quantity a study
    measures (below the threshold, to noise). Used by the train stage, every sweep trial and the task's own
    training stages. `ckpt_dir` holds last.ckpt, from which an interrupted run resumes.
    """
    from instdiv import registry

    family = registry.family(params.model.kind)
    tcfg = params.train
    if tcfg.threads and (str(tcfg.accelerator).lower() == "cpu" or device() == "cpu"):
        torch.set_num_threads(tcfg.threads)
    train_loader, val_loaders = loaders(tcfg, data, params.evaluate.batch_size)
    total_steps = tcfg.total_steps(len(train_loader.dataset), world_size(tcfg))
    last = ckpt_dir / "last.ckpt"
    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    network = family.build(params.model, tok, data.block_size)
    lit = LitCausalLM(network, tcfg, total_steps, tok, data)
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, enable_version_counter=False)
    progress = [ProgressLine(total_steps, task.monitor)] if verbose else []
    speed = SpeedMonitor(log_interval(tcfg, len(train_loader)))
    learned_at = LearnedAt(f"val/{task.seen_metric or 'seen_accuracy'}", params.evaluate.learned_at)
    precision = choose_precision(tcfg, family, params.model)
    trainer = build_trainer(tcfg, precision, total_steps, logger=logger, epoch_batches=len(train_loader),
                            callbacks=[latest, ResumePoint(train_loader.order, tcfg.batch_size), *progress,
                                       DataOnDevice([data.train, *data.val.values()]), speed, learned_at,
                                       *callbacks])
    if verbose:
        trainable = sum(q.numel() for q in network.parameters() if q.requires_grad)
        log.info("training %s parameters%s for %d steps on %s examples (%s, %s)%s", f"{network.num_params():,}",
                 f" ({trainable:,} trainable)" if trainable < network.num_params() else "", total_steps, f"{len(train_loader.dataset):,}", trainer.precision,
                 trainer.accelerator.__class__.__name__, f"; resuming {last}" if resume else "")
    start = time.time()
    trainer.fit(lit, train_loader, val_loaders, ckpt_path=str(last) if resume else None)
    final = trainer.callback_metrics.get(f"val/{task.monitor}")
    info = {"steps": trainer.global_step, "total_steps": total_steps,
            "fit_seconds": round(time.time() - start, 1),
            "last_validation": float(final) if final is not None else None,
            "precision": str(trainer.precision),
            # None: the training rules were never learned to evaluate.learned_at on validation
            "steps_to_learn": learned_at.step, "seconds_to_learn": learned_at.seconds}
    if not trainer.is_global_zero:
        return None, family, info
    info.update(parameters=network.num_params(),
                trainable_parameters=sum(q.numel() for q in network.parameters() if q.requires_grad))
    return network.cpu().eval(), family, info
