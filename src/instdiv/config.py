"""Typed configs: a `params.yaml` section is a pydantic model (`Section`), validated with one-line messages
that name the key and the fix.

Unknown keys are rejected (with a did-you-mean), wrong types named with what was expected, missing keys take
the defaults written here, and cross-field rules live in each section's `check`. The engine's own sections
(train, evaluate, tracking, sweep) are here; tasks and model families declare theirs in their packages, and
`instdiv.params` assembles them into one `Params`.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from instdiv.errors import ConfigError

IntOrRange = int | list[int]
# A number written as 4 stays 4 (not 4.0): params files, manifests and study names keep what was written.
Number = int | float
PRESETS_DIR = Path(__file__).parent / "presets"  # settings for other scales: `instdiv preset NAME`


def as_range(value: IntOrRange) -> tuple[int, int]:
    """A length given as `3` or `[2, 4]` (inclusive) as a (lo, hi) pair."""
    if isinstance(value, int):
        return value, value
    return value[0], value[1]


class Section(BaseModel):
    """One section of params.yaml. Subclasses set `section` (their key) and may override `check`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    section: ClassVar[str] = ""

    @model_validator(mode="after")
    def _checked(self):
        self.check()
        return self

    def check(self) -> None:
        """Cross-field rules; raise ConfigError naming the key and the fix."""

    def replace(self, **changes) -> "Section":
        """A validated copy with some keys changed (a sweep point, a test's variant)."""
        return parse(type(self), {**self.model_dump(), **changes}, self.section)


def parse(cls: type[Section], raw: Any, where: str | None = None) -> Section:
    """Build and validate a section from a mapping; every error is one ConfigError naming the key."""
    where = where or cls.section
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    reject_unknown(raw, list(cls.model_fields), where)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = err["loc"][0] if err["loc"] else None
        if key in cls.model_fields:
            raise ConfigError(wrong_type(f"{where}.{key}", raw.get(key), cls.model_fields[key].annotation)) \
                from None
        raise ConfigError(f"{where}: {err['msg']}") from None


def reject_unknown(raw: dict, known: list[str], where: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")


def check_type(value: Any, annotation: Any, key: str) -> None:
    """One value against a type, strictly (a sweep axis's values against the key they vary)."""
    try:
        TypeAdapter(annotation, config=ConfigDict(strict=True)).validate_python(value)
    except ValidationError:
        raise ConfigError(wrong_type(key, value, annotation)) from None


def wrong_type(key: str, value: Any, annotation: Any) -> str:
    return f"{key}={value!r} has the wrong type: expected {describe(annotation)}"


def describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def positive(obj: Section, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        if value <= 0:
            raise ConfigError(f"{obj.section}.{key}={value} must be positive")


def check_range(obj: Section, key: str) -> tuple[int, int]:
    value = getattr(obj, key)
    if isinstance(value, list) and len(value) != 2:
        raise ConfigError(f"{obj.section}.{key}={value}: give one length or a [min, max] pair")
    lo, hi = as_range(value)
    if lo <= 0 or hi < lo:
        raise ConfigError(f"{obj.section}.{key}={value}: lengths must be positive and a range "
                          "[min, max] needs min <= max")
    return lo, hi


# ------------------------------------------------------------------------------------ engine sections

class TrainConfig(Section):
    section: ClassVar[str] = "train"
    seed: int = 0
    batch_size: int = 64
    lr: Number = 3e-3
    weight_decay: Number = 0.1
    warmup_frac: Number = 0.05
    # adamw: the model family's AdamW; muon: torch.optim.Muon on the hidden matrices, AdamW on embeddings,
    # norms and biases (engine/optim.py), at the same lr and schedule
    optimizer: Literal["adamw", "muon"] = "adamw"
    # The step budget scales with the data: epochs over the training set, unless max_steps is given.
    epochs: Number = 4.0
    max_steps: int | None = None
    val_every_steps: int = 250
    # "auto" picks by measurement (benchmarks/README.md): bf16 on GPUs; on CPUs the model family decides.
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    accelerator: str = "auto"
    # auto: one device. Several (an int > 1) train with Lightning's DDP, one process per device; sweeps and
    # evaluation never do (a sweep puts one worker on each GPU instead).
    devices: int | str = "auto"
    strategy: str = "auto"
    grad_clip: Number = 1.0
    checkpoint_dir: str = "checkpoints"
    # Threads of one training process on a CPU. The thread count changes how floating-point sums are split,
    # and small models in this regime diverge from it (the same seed ended at 0.913 on its training rules with
    # 2 threads, 0.976 with 1): with 1 the train stage and a sweep trial of the same settings give the same
    # model, and sweeps run one process per core instead. null: torch's default (every core).
    threads: int | None = 1
    # The longest row trained on, in tokens (prompt, response, EOS); longer rows are left out and counted.
    # null: every row, the context sized to the longest.
    max_length: int | None = None
    # torch.compile of the training step's forward and backward (a mode of torch.compile; reduce-overhead adds
    # CUDA graphs). none: eager. Validation and decoding stay eager (their shapes change every token).
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"

    # Where a run happens, not what it learns: left out of fingerprints and study names.
    PLACEMENT: ClassVar[tuple[str, ...]] = ("accelerator", "devices", "strategy", "checkpoint_dir")
    # Added after the first studies: left out of study names while at their defaults (engine/sweep/study.py).
    LATER_KEYS: ClassVar[tuple[str, ...]] = ("threads", "max_length", "compile", "optimizer")

    def check(self) -> None:
        positive(self, "batch_size", "val_every_steps", "epochs")
        if self.threads is not None:
            positive(self, "threads")
        if self.max_steps is not None:
            positive(self, "max_steps")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"train.max_length={self.max_length} must be at least 2 (a token and EOS)")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ConfigError(f"train.lr={self.lr} must be a positive number")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError(f"train.warmup_frac={self.warmup_frac} is outside [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")

    def total_steps(self, n_train: int, world_size: int = 1) -> int:
        """Optimizer steps: max_steps, or epochs over the data at a global batch of batch_size per device."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_train / (self.batch_size * world_size)))


class EvaluateConfig(Section):
    section: ClassVar[str] = "evaluate"
    batch_size: int = 512  # rows decoded at once, in every evaluation (stages, validation, sweep trials)
    n_samples: int = 40  # predictions written beside the metrics for reading by eye
    # A run counts as trained when its scores on the training instructions (the task's learned_metrics) reach
    # this; below it the run is reported as untrained: drawn hollow, counted, left out of fits and verdicts.
    # 0: no judgement (every run counts; for smoke tests of the machinery, not for findings).
    learned_at: Number = 0.95

    def check(self) -> None:
        positive(self, "batch_size")
        if not 0.0 <= self.learned_at <= 1.0:
            raise ConfigError(f"evaluate.learned_at={self.learned_at} must be in [0, 1]: an accuracy on the "
                              "training instructions (0: every run counts)")
        if self.n_samples < 0:
            raise ConfigError(f"evaluate.n_samples={self.n_samples} must be >= 0")


class TrackingConfig(Section):
    section: ClassVar[str] = "tracking"
    # null: the MLFLOW_TRACKING_URI environment variable if set, else SQLite at <repo>/mlruns/mlflow.db.
    uri: str | None = None
    experiment: str = "rewrite"
    # The train stage registers its model under this name ({task}: the task's) and points the alias
    # `champion` at it: mlflow.pyfunc.load_model("models:/instdiv-rewrite@champion"). null: no registration.
    registered_model: str | None = "instdiv-{task}"

    def check(self) -> None:
        if not self.experiment:
            raise ConfigError("tracking.experiment must be a non-empty name")
        if self.registered_model is not None and not self.registered_model.replace("{task}", "x").strip():
            raise ConfigError("tracking.registered_model must be a name (it may hold {task}) or null")


class SweepConfig(Section):
    """An Optuna study over a task's instruction count I and more axes (instdiv/engine/sweep/). What the task
    measures and which keys an axis may vary are checked against the task when params are assembled."""

    section: ClassVar[str] = "sweep"
    LATER_KEYS: ClassVar[tuple[str, ...]] = ("task", "ladder_ratio")  # left out of study names at their defaults
    # outcomes: each run is an outcome (generalized: `metric` reaches `target` of the run's own score on its
    # training rules), placed adaptively on a ladder of I (x `ladder_ratio` apart over `instructions` [min, max])
    # where it informs I_50, the I at which half the runs generalize (engine/stats.py); every run takes the
    # next unused seed at its I, for `max_trials` runs. threshold: the older search for the I where the mean
    # `metric` crosses `target` of its plateau, `seeds` at each I; grid: every combination once.
    mode: Literal["outcomes", "threshold", "grid"] = "threshold"
    task: str = "rewrite"  # a task package under instdiv/tasks: its count axis is I, its scores the metrics
    study: str = "rewrite"  # a suffix hashed from the settings keeps different sweeps apart
    # Any Optuna storage URL (sqlite:///, postgresql://...) or journal:<file> for several workers on one
    # host; null: journal:studies/<study>.journal (committed with the reports; several workers on one host).
    storage: str | None = None
    metric: str = "unseen_op_accuracy"
    # The threshold is where `metric` reaches this fraction of its plateau (the mean at the top of the range,
    # where models converge to whatever level their scale allows).
    target: Number = 0.5
    instructions: list[int] = Field(default_factory=lambda: [16, 1024])  # threshold: [min, max]; grid: values
    # More grid axes: keys of the task's sections and their values, e.g. {examples_per_instruction: [10, 100]},
    # {skew: [1.0, 0.2]} (rewrite) or {general_percent: [0, 10, 25]} (code). Threshold mode takes one value each.
    axes: dict[str, list] = Field(default_factory=dict)
    total_examples: int | None = None  # the trials' budget N; null: the task's own
    # Every point is trained once per seed; a seed draws the rules, the inputs and the initial weights. The
    # threshold's interval comes from the seeds (instdiv/engine/estimate.py).
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    max_trials: int = 12  # threshold and outcomes mode's budget of training runs (outcomes: raise it to resume)
    ladder_ratio: Number = 1.4142  # outcomes mode: the ladder's largest step between neighbouring values of I
    workers: int = 1  # processes started by one command; start the command on more machines to add more
    max_retries: int = 2  # a failed or killed trial is retried this often
    heartbeat_seconds: int = 30  # a trial silent for 3 heartbeats counts as killed (RDB storages)
    pruning: bool = False  # prune trials through PyTorchLightningPruningCallback
    epochs: Number | None = None  # each trial's budget in epochs; null: train's (max_steps, else epochs)
    confidence: Number = 0.9  # of the threshold's interval over seeds

    def check(self) -> None:
        s = "sweep"
        positive(self, "max_trials", "workers", "heartbeat_seconds")
        if not self.instructions or min(self.instructions) <= 0:
            raise ConfigError(f"{s}.instructions={self.instructions} must list positive instruction counts")
        for key, values in self.axes.items():
            if key == "seed":
                raise ConfigError(f"sweep.axes: '{key}' has its own setting: sweep.seeds")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.axes.{key}={values!r}: give a non-empty list of values")
        if self.mode == "threshold":
            if len(self.instructions) != 2 or self.instructions[0] >= self.instructions[1]:
                raise ConfigError(f"{s}.instructions={self.instructions}: threshold mode searches a range; give "
                                  "[min, max] with min < max (or use mode: grid for a list)")
            if self.max_trials < 3 * len(self.seeds):
                raise ConfigError(f"{s}.max_trials={self.max_trials}: each seed's logistic fit needs 3 values of I, "
                                  f"so {len(self.seeds)} seeds need at least {3 * len(self.seeds)} runs")
            if any(len(values) > 1 for values in self.axes.values()):
                raise ConfigError(f"{s}.axes: threshold mode searches I alone; give one value per axis, or use "
                                  "mode: grid")
        if self.mode == "outcomes":
            if len(self.instructions) != 2 or self.instructions[0] >= self.instructions[1]:
                raise ConfigError(f"{s}.instructions={self.instructions}: outcomes mode places runs on a ladder over "
                                  "[min, max]; give two values with min < max")
            if self.max_trials < 3:
                raise ConfigError(f"{s}.max_trials={self.max_trials}: outcomes mode needs at least 3 runs (the "
                                  "ladder's ends and middle) and some 40 for a useful interval")
            if not self.ladder_ratio > 1.0:
                raise ConfigError(f"{s}.ladder_ratio={self.ladder_ratio} must be above 1, e.g. 1.4142 (x sqrt 2)")
            if any(len(values) > 1 for values in self.axes.values()):
                raise ConfigError(f"{s}.axes: outcomes mode places runs on I alone; give one value per axis (one "
                                  "study per setting), or use mode: grid")
        if len(set(self.instructions)) != len(self.instructions):
            raise ConfigError(f"{s}.instructions={self.instructions} lists a value twice")
        if not 0.0 < self.target < 1.0:
            raise ConfigError(f"{s}.target={self.target} must be between 0 and 1 (a fraction of the plateau)")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigError(f"{s}.confidence={self.confidence} must be in [0.5, 1)")
        if self.max_retries < 0:
            raise ConfigError(f"{s}.max_retries={self.max_retries} must be >= 0")
        if self.epochs is not None:
            positive(self, "epochs")
        if self.total_examples is not None:
            positive(self, "total_examples")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{s}.seeds={self.seeds} must list distinct seeds, at least one")


class PretrainBase(BaseModel):
    """One base model the suite pretrains itself: a task's data and the settings that differ from params.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    task: str  # a task package: its data is the corpus (pycode: the standard library's source)
    # Sections of params.yaml as this base changes them, e.g. {rewrite: {n_instructions: 8000}, train: {...}}
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # A corpus of several datasets of the task: each part is the task's data at the base's settings changed
    # again by the part's, and the corpus their union (split by split); empty: the task's data alone.
    parts: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class PretrainConfig(Section):
    """Bases pretrained by `instdiv pretrain NAME` (experiments/dvc.yaml's pretrain@NAME): models/base-NAME.pt,
    which a fine-tuning run starts from with model.init."""

    section: ClassVar[str] = "pretrain"
    bases: dict[str, PretrainBase] = Field(default_factory=dict)

    def check(self) -> None:
        for name in self.bases:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"pretrain.bases: '{name}' must be letters, digits, - and _ (it names files)")


ENGINE_SECTIONS: dict[str, type[Section]] = {
    "train": TrainConfig, "evaluate": EvaluateConfig, "tracking": TrackingConfig, "sweep": SweepConfig,
    "pretrain": PretrainConfig}
