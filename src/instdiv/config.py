"""Typed configs: one dataclass per `params.yaml` section, validated with messages that name the key.

Each pipeline step reads only its own section(s). `load_params` checks every section for unknown, missing
and mistyped keys before any work starts, so a typo fails in a second instead of after training.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from instdiv.errors import ConfigError

IntOrRange = int | list[int]
PRESETS_DIR = Path(__file__).parent / "presets"  # settings for other scales: `instdiv preset NAME`


def as_range(value: IntOrRange) -> tuple[int, int]:
    """A length given as `3` or `[2, 4]` (inclusive) as a (lo, hi) pair."""
    if isinstance(value, int):
        return value, value
    return value[0], value[1]


@dataclass(frozen=True)
class RewriteConfig:
    """The string-rewrite task: rule x -> y applied to input z, leftmost occurrence, once."""

    alphabet_size: int = 8
    pattern_length: IntOrRange = 3
    replacement_length: IntOrRange = 3
    input_length: int = 10
    n_instructions: int = 512
    # Exactly one of the two: S examples for every instruction, or a total budget N = I x S split evenly.
    examples_per_instruction: int | None = None
    total_examples: int | None = 50_000
    noop_share: float = 0.2
    # Exponent a of the power law f(x) = a x^(a-1) over instructions (x in [0, 1]): instruction k of I gets
    # a share ((k+1)/I)^a - (k/I)^a of the examples, at least one. null or 1: uniform; a < 1 concentrates
    # the examples on the first instructions.
    skew: float | None = None
    # "pairs": unseen rules are new (pattern, replacement) pairs; "patterns": their patterns never occur in
    # training either (stricter: with a small alphabet every pattern is soon seen in training).
    holdout: Literal["pairs", "patterns"] = "pairs"
    n_unseen_instructions: int = 256
    n_test_examples: int = 2_000
    n_valid_examples: int = 512
    seed: int = 0
    # Semantic families (paper Exp. 4; instdiv/families.py): null for unconstrained rules, or the families
    # rules are drawn from; a rule's pattern and replacement share one family and one k drawn from family_k.
    # Adds the test splits small_k (k below family_k) and unconstrained (ordinary random rules).
    families: list[str] | None = None
    family_k: IntOrRange | None = None
    # Occurrence variety (paper v1, Table 1): null for one pattern placed at random (more may occur by
    # chance), or the numbers of occurrences a training input holds exactly (each op row draws one).
    occurrences: list[int] | None = None
    test_occurrences: IntOrRange | None = None  # the same for validation and test inputs; null: occurrences
    # Encrypted rewriting (paper Fig. 5): every output, no-ops included, is letter-shifted by the rule's key.
    encrypt: bool = False

    def validate(self) -> None:
        s = "rewrite"
        _positive(self, s, "alphabet_size", "input_length", "n_instructions", "n_unseen_instructions",
                  "n_test_examples", "n_valid_examples")
        if self.alphabet_size > 26:
            raise ConfigError(f"{s}.alphabet_size={self.alphabet_size}: strings use lowercase Latin letters; "
                              "set it between 1 and 26")
        for key in ("pattern_length", "replacement_length"):
            lo, hi = _check_range(self, s, key)
            if key == "pattern_length" and hi > self.input_length:
                raise ConfigError(f"{s}.pattern_length={getattr(self, key)} is longer than "
                                  f"{s}.input_length={self.input_length}: the pattern must fit in the input; "
                                  "shorten the pattern or lengthen the input")
        if (self.examples_per_instruction is None) == (self.total_examples is None):
            raise ConfigError(f"{s}: set exactly one of examples_per_instruction (S) and total_examples "
                              "(N = I x S); set the other to null")
        if self.examples_per_instruction is not None:
            _positive(self, s, "examples_per_instruction")
        if self.total_examples is not None:
            _positive(self, s, "total_examples")
            if self.total_examples < self.n_instructions:
                raise ConfigError(f"{s}.total_examples={self.total_examples} is smaller than "
                                  f"{s}.n_instructions={self.n_instructions}: every instruction needs at least "
                                  "one example; raise total_examples or lower n_instructions")
        if self.skew is not None and not (self.skew > 0 and math.isfinite(self.skew)):
            raise ConfigError(f"{s}.skew={self.skew} must be a positive exponent (null or 1 for uniform)")
        if not 0.0 <= self.noop_share <= 1.0:
            raise ConfigError(f"{s}.noop_share={self.noop_share} is outside [0, 1]; it is the share of examples "
                              "whose input does not contain the pattern")
        if self.noop_share > 0 and self.alphabet_size == 1:
            raise ConfigError(f"{s}.noop_share={self.noop_share} is impossible with alphabet_size=1: every "
                              "input contains every pattern; set noop_share: 0 or a larger alphabet")
        self._validate_families()
        self._validate_occurrences()
        if self.encrypt and self.alphabet_size < 2:
            raise ConfigError(f"{s}.encrypt needs alphabet_size >= 2: a letter shift of a one-letter alphabet "
                              "changes nothing")

    def _validate_families(self) -> None:
        from instdiv.families import FAMILIES

        s = "rewrite"
        if self.families is None:
            if self.family_k is not None:
                raise ConfigError(f"{s}.family_k={self.family_k} is set but {s}.families is null; name the "
                                  f"families (one or more of {', '.join(FAMILIES)}) or set family_k: null")
            return
        if not self.families or len(set(self.families)) != len(self.families):
            raise ConfigError(f"{s}.families={self.families}: give distinct family names, or null")
        for name in self.families:
            if name not in FAMILIES:
                raise ConfigError(f"{s}.families: unknown family '{name}'; known: {', '.join(FAMILIES)} "
                                  "(a new one is one function in instdiv/families.py)")
        if self.family_k is None:
            raise ConfigError(f"{s}.families is set: give {s}.family_k, the range of k to train on, e.g. [3, 4]")
        lo, hi = _check_range(self, s, "family_k")
        shortest = min(as_range(self.pattern_length)[0], as_range(self.replacement_length)[0])
        if hi > shortest:
            raise ConfigError(f"{s}.family_k={self.family_k} does not fit: a member of a family is a base of "
                              f"L // k >= 1 letters shaped by k, and the shortest pattern or replacement has "
                              f"L = {shortest} (pattern_length={self.pattern_length}, replacement_length="
                              f"{self.replacement_length}); lower family_k or lengthen both (and input_length)")

    def _validate_occurrences(self) -> None:
        s = "rewrite"
        longest = as_range(self.pattern_length)[1]
        if self.occurrences is not None:
            if not self.occurrences or len(set(self.occurrences)) != len(self.occurrences) or \
                    min(self.occurrences) < 1:
                raise ConfigError(f"{s}.occurrences={self.occurrences}: give distinct counts >= 1, or null")
        if self.test_occurrences is not None:
            _check_range(self, s, "test_occurrences")
        for key in ("occurrences", "test_occurrences"):
            value = getattr(self, key)
            if value is None:
                continue
            most = max(value) if key == "occurrences" else as_range(value)[1]
            # n copies need n - 1 letters between them: a self-overlapping pattern ("aa") placed back to
            # back would occur more than n times.
            if most * longest + most - 1 > self.input_length:
                raise ConfigError(f"{s}.{key}={value}: {most} occurrences of a {longest}-letter pattern, "
                                  f"with a letter between them, need input_length >= {most * longest + most - 1}"
                                  f" (it is {self.input_length}); lengthen the input or lower {key}")

    @property
    def train_examples(self) -> int:
        if self.total_examples is not None:
            return self.total_examples
        return self.n_instructions * self.examples_per_instruction

    @property
    def shortest_pattern(self) -> int:
        """The shortest pattern any split can hold: family members may be shorter than pattern_length."""
        lo = as_range(self.pattern_length)[0]
        if self.families is None:
            return lo
        return min((lo // k) * k for k in range(1, as_range(self.family_k)[1] + 1))

    @property
    def max_output_length(self) -> int:
        return self.input_length - self.shortest_pattern + as_range(self.replacement_length)[1]


@dataclass(frozen=True)
class CodeConfig:
    """Synthetic code tasks (instdiv/codetasks.py): English instructions for list programs, Python targets."""

    n_programs: int = 200  # distinct program structures in training
    examples_per_program: int = 10  # each with new constants, phrasings and test inputs
    depth: IntOrRange = field(default_factory=lambda: [1, 2])  # steps per program before the optional reduction
    n_test_programs: int = 100  # held-out structures, for test and again for validation
    tests_per_program: int = 5  # hidden asserts per example
    seed: int = 0

    def validate(self) -> None:
        _positive(self, "code", "n_programs", "examples_per_program", "n_test_programs", "tests_per_program")
        _check_range(self, "code", "depth")


@dataclass(frozen=True)
class MixConfig:
    """A code-instruction training set of fixed size with a share of general-domain instructions."""

    total_examples: int = 4000  # the fixed budget
    # One training set per value: the percent of general-domain rows (exact after rounding), as DVC stages
    # mix@<percent>.
    general_percents: list[int] = field(default_factory=lambda: [0, 5, 10, 15, 20, 25])
    general_tasks: list[str] = field(default_factory=lambda: ["rewrite", "arithmetic", "words"])
    # Real data instead of the synthetic sets: a local .jsonl/.json/.parquet file (Alpaca, OSS-Instruct or
    # chain-of-thought schema) or hf:<dataset name>; null: synthetic.
    code_source: str | None = None
    general_source: str | None = None
    seed: int = 0

    def validate(self) -> None:
        from instdiv.general import TASKS

        _positive(self, "mix", "total_examples")
        bad = [p for p in self.general_percents if not 0 <= p <= 100]
        if bad or not self.general_percents or len(set(self.general_percents)) != len(self.general_percents):
            raise ConfigError(f"mix.general_percents={self.general_percents}: give distinct percents of "
                              "general-domain rows between 0 and 100")
        unknown = [t for t in self.general_tasks if t not in TASKS]
        if unknown or (not self.general_tasks and self.general_source is None and max(self.general_percents) > 0):
            raise ConfigError(f"mix.general_tasks={self.general_tasks}: choose from {', '.join(TASKS)} (or set "
                              "mix.general_source to a file)")


@dataclass(frozen=True)
class CodeModelConfig:
    """One code model per mix: the GPT's shape is `model`, the optimizer's settings `train`; these differ."""

    epochs: float = 30.0  # a few thousand rows need many passes
    batch_size: int = 32
    timeout_seconds: float = 5.0  # per program, wall clock
    memory_mb: int = 512  # per program
    workers: int | None = None  # programs run at once; null: the CPU count
    benchmarks: list[str] = field(default_factory=list)  # HumanEval/MBPP-form files, scored as well

    def validate(self) -> None:
        _positive(self, "code_model", "epochs", "batch_size", "timeout_seconds", "memory_mb")
        if self.workers is not None:
            _positive(self, "code_model", "workers")
        for path in self.benchmarks:
            if not Path(path).is_file():
                raise ConfigError(f"code_model.benchmarks: {path} not found; give HumanEval- or MBPP-form .jsonl "
                                  "or .parquet files, or []")


@dataclass(frozen=True)
class ModelConfig:
    """GPT decoder size; vocabulary and context length follow from the data."""

    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    dropout: float = 0.0

    def validate(self) -> None:
        _positive(self, "model", "n_layer", "n_head", "d_model")
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}; "
                              "pick a d_model that is a multiple of n_head")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} is outside [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.05
    # The step budget scales with the data: epochs over the training set, unless max_steps is given.
    epochs: float = 4.0
    max_steps: int | None = None
    val_every_steps: int = 250
    # "auto" picks by measurement (benchmarks/README.md): bf16 on GPUs, and on CPUs from d_model 256 up.
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    grad_clip: float = 1.0
    checkpoint_dir: str = "checkpoints"

    def validate(self) -> None:
        _positive(self, "train", "batch_size", "val_every_steps", "epochs")
        if self.max_steps is not None:
            _positive(self, "train", "max_steps")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ConfigError(f"train.lr={self.lr} must be a positive number")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError(f"train.warmup_frac={self.warmup_frac} is outside [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")

    def total_steps(self, n_train: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_train / self.batch_size))


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 512
    n_samples: int = 40  # predictions written to reports/predictions.csv for reading by eye

    def validate(self) -> None:
        _positive(self, "evaluate", "batch_size")
        if self.n_samples < 0:
            raise ConfigError(f"evaluate.n_samples={self.n_samples} must be >= 0")


@dataclass(frozen=True)
class TrackingConfig:
    # null: the MLFLOW_TRACKING_URI environment variable if set, else SQLite at <repo>/mlruns/mlflow.db.
    uri: str | None = None
    experiment: str = "rewrite"

    def validate(self) -> None:
        if not self.experiment:
            raise ConfigError("tracking.experiment must be a non-empty name")


CODE_METRICS = ["pass_at_1", "parse_rate"]


@dataclass(frozen=True)
class SweepConfig:
    """An Optuna study over instruction count x examples per instruction x skew (src/instdiv/sweep.py), on
    the rewrite task or on code-instruction mixes (programs x general-domain share)."""

    # threshold: adaptive search for the I where `metric` crosses `target`; grid: every combination once.
    mode: Literal["threshold", "grid"] = "threshold"
    # rewrite: I = distinct rules (the `rewrite` section); code: I = distinct code programs (`code`, mixed
    # per `mix`, trained per `code_model`, scored by running the programs).
    task: Literal["rewrite", "code"] = "rewrite"
    study: str = "rewrite"  # a suffix hashed from the settings keeps different sweeps apart
    # Any Optuna storage URL (sqlite:///, postgresql://...) or journal:<file> for several workers on one
    # host; null: sqlite:///<repository root>/optuna.db.
    storage: str | None = None
    metric: Literal["unseen_op_accuracy", "unseen_accuracy", "seen_accuracy", "pass_at_1",
                    "parse_rate"] = "unseen_op_accuracy"
    target: float = 0.5
    instructions: list[int] = field(default_factory=lambda: [16, 1024])  # threshold: [min, max]; grid: values
    # More grid axes: keys of the task's section and their values. rewrite: e.g. {examples_per_instruction:
    # [10, 100]} (S instead of the budget N), {skew: [1.0, 0.2, 0.03]}, {noop_share: [0.1, 0.5]}; code: e.g.
    # {general_percent: [0, 10, 25]}, {depth: [1, [1, 2]]}. Threshold mode takes one value each.
    axes: dict[str, list] = field(default_factory=dict)
    total_examples: int | None = None  # the trials' budget N; null: rewrite's (mix's for task code)
    seeds: list[int] = field(default_factory=lambda: [0])  # grid: every point once per seed
    max_trials: int = 7  # threshold mode's budget of training runs
    workers: int = 1  # processes started by one command; start the command on more machines to add more
    max_retries: int = 2  # a failed or killed trial is retried this often
    heartbeat_seconds: int = 30  # a trial silent for 3 heartbeats counts as killed (RDB storages)
    pruning: bool = False  # prune trials through PyTorchLightningPruningCallback
    epochs: float | None = None  # each trial's training budget; null: train.epochs
    bootstrap: int = 1000  # resamples for the threshold's confidence interval
    confidence: float = 0.9

    def validate(self) -> None:
        s = "sweep"
        _positive(self, s, "max_trials", "workers", "heartbeat_seconds", "bootstrap")
        if not self.instructions or min(self.instructions) <= 0:
            raise ConfigError(f"{s}.instructions={self.instructions} must list positive instruction counts")
        code = self.task == "code"
        if (self.metric in CODE_METRICS) != code:
            choices = CODE_METRICS if code else [m for m in typing.get_args(
                typing.get_type_hints(SweepConfig)["metric"]) if m not in CODE_METRICS]
            raise ConfigError(f"sweep.metric={self.metric} is not measured by task {self.task}; choose one of "
                              f"{', '.join(choices)}")
        hints = {**typing.get_type_hints(CodeConfig), "general_percent": int} if code else \
            typing.get_type_hints(RewriteConfig)
        for key, values in self.axes.items():
            if key in (self.count_axis, "seed"):
                raise ConfigError(f"sweep.axes: '{key}' has its own setting: sweep.instructions and sweep.seeds")
            if key not in hints:
                close = difflib.get_close_matches(key, list(hints), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"sweep.axes: '{key}' is not a {self.task} key an axis can vary{hint}")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.axes.{key}={values!r}: give a non-empty list of values")
            for value in values:
                _check_type(value, hints[key], f"sweep.axes.{key}")
            if len({json.dumps(v) for v in values}) != len(values):
                raise ConfigError(f"sweep.axes.{key}={values} lists a value twice")
        if self.mode == "threshold":
            if len(self.instructions) != 2 or self.instructions[0] >= self.instructions[1]:
                raise ConfigError(f"{s}.instructions={self.instructions}: threshold mode searches a range; give "
                                  "[min, max] with min < max (or use mode: grid for a list)")
            if self.max_trials < 3:
                raise ConfigError(f"{s}.max_trials={self.max_trials}: a logistic fit needs at least 3 runs")
            if any(len(values) > 1 for values in self.axes.values()):
                raise ConfigError(f"{s}.axes: threshold mode searches I alone; give one value per axis, or use "
                                  "mode: grid")
        if len(set(self.instructions)) != len(self.instructions):
            raise ConfigError(f"{s}.instructions={self.instructions} lists a value twice")
        if not 0.0 < self.target < 1.0:
            raise ConfigError(f"{s}.target={self.target} must be between 0 and 1 (an accuracy)")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigError(f"{s}.confidence={self.confidence} must be in [0.5, 1)")
        if self.max_retries < 0:
            raise ConfigError(f"{s}.max_retries={self.max_retries} must be >= 0")
        if self.epochs is not None:
            _positive(self, s, "epochs")
        if self.total_examples is not None:
            _positive(self, s, "total_examples")
        if not self.seeds:
            raise ConfigError(f"{s}.seeds must list at least one seed")

    @property
    def count_axis(self) -> str:
        """The parameter of the instruction count I in trials: rules or code programs."""
        return "n_programs" if self.task == "code" else "n_instructions"


@dataclass(frozen=True)
class Params:
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    code_model: CodeModelConfig = field(default_factory=CodeModelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file's syntax") from None
    return params_from_dict(raw or {}, source=str(path))


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    sections = {f.name: f.type for f in dataclasses.fields(Params)}
    hints = typing.get_type_hints(Params)
    _reject_unknown(raw, sections, source)
    built = {}
    for name in sections:
        if name not in raw:
            raise ConfigError(f"{source}: section '{name}' is missing; copy it from the README's params.yaml")
        built[name] = section_from_dict(hints[name], raw[name], name)
    return Params(**built)


def section_from_dict(cls: type, raw: Any, section: str):
    """Build and validate one section's dataclass; every key must be present (params.yaml is the record)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    _reject_unknown(raw, names, section)
    for name in names:
        if name not in raw:
            default = getattr(cls(), name)
            raise ConfigError(f"{section}.{name} is missing; add it to params.yaml (default: {default!r})")
        _check_type(raw[name], hints[name], f"{section}.{name}")
    obj = cls(**raw)
    obj.validate()
    return obj


def _reject_unknown(raw: dict, known, where: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")


def _check_type(value: Any, annotation: Any, key: str) -> None:
    if not _matches(value, annotation):
        raise ConfigError(f"{key}={value!r} has the wrong type: expected {_describe(annotation)}")


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) for k in value)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return "a mapping"
    if annotation is type(None):
        return "null"
    return annotation.__name__


def _positive(obj, section: str, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        if value <= 0:
            raise ConfigError(f"{section}.{key}={value} must be positive")


def _check_range(obj, section: str, key: str) -> tuple[int, int]:
    value = getattr(obj, key)
    if isinstance(value, list) and len(value) != 2:
        raise ConfigError(f"{section}.{key}={value}: give one length or a [min, max] pair")
    lo, hi = as_range(value)
    if lo <= 0 or hi < lo:
        raise ConfigError(f"{section}.{key}={getattr(obj, key)}: lengths must be positive and a range "
                          "[min, max] needs min <= max")
    return lo, hi
