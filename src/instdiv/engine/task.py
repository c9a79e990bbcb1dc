"""What the engine asks of a task. A task is a package under instdiv/tasks (instdiv/tasks/rewrite is the
reference) whose module exposes `TASK`, an instance of a `Task` subclass; `instdiv.registry` finds it.

The engine never compares a task's name: generating, training, validating, scoring, sweeping and reporting
all go through these methods. A task owns one or more params.yaml sections (`sections`, its own first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from instdiv.config import Section
from instdiv.engine import data as datafiles
from instdiv.engine.text import Tokenizer

if TYPE_CHECKING:  # the assembled params: a pydantic model with one attribute per section
    from instdiv.params import Params


@dataclass
class Examples:
    """Rows as model inputs and targets: prompt text, the exact response, and optionally a group per row
    (e.g. op / no-op) whose accuracy is reported on its own as <split>_<group>_accuracy."""

    prompts: list[str]
    targets: list[str]
    groups: list[str] | None = None


class Task:
    name: ClassVar[str]  # its params section, `--task` and `sweep.task`
    sections: ClassVar[dict[str, type[Section]]]  # the params sections it owns, its own first
    count_axis: ClassVar[str]  # the key of its section that counts distinct instructions: the sweep's I
    count_label: ClassVar[str] = "distinct training instructions I"
    budget_key: ClassVar[str | None] = None  # the key of its section that sweep.total_examples sets
    groups: ClassVar[tuple[str, ...]] = ()  # row groups scored on their own (see Examples)
    monitor: ClassVar[str] = "unseen_accuracy"  # validation metric shown while training and used for pruning
    metrics: ClassVar[tuple[str, ...]] = ("unseen_accuracy",)  # what a sweep may target; its reports show these
    seen_metric: ClassVar[str | None] = None  # the score on training instructions, drawn beside the rest
    # Scores on the training instructions that must all reach evaluate.learned_at for a run to count as
    # trained (those the data has: a split without no-ops has no no-op score); none: runs are not judged.
    learned_metrics: ClassVar[tuple[str, ...]] = ()
    metric_pattern: ClassVar[str] = r"[a-z_]+_accuracy"  # every metric name its scores can take
    columns: ClassVar[tuple[str, ...]] = ()  # columns every split must have (checked on reading)
    stage: ClassVar[str | None] = None  # the DVC stage that writes its data, for messages; None: the CLI's

    # ------------------------------------------------------------------------------------------ data
    def generate(self, params: Params) -> dict[str, pa.Table]:
        """Every split: `train`, `valid_<name>` for validation and `test_<name>` for scoring."""
        raise NotImplementedError

    def check(self, params: Params) -> None:
        """Fail before any work when the settings cannot give the data (raise ConfigError)."""

    def write(self, tables: dict[str, pa.Table], params: Params, out_dir: Path) -> dict:
        return datafiles.write(tables, out_dir, task=self.name, params=getattr(params, self.name).model_dump(),
                               **self.manifest_extras(tables, params))

    def manifest_extras(self, tables: dict[str, pa.Table], params: Params) -> dict:
        """What the manifest records beside the files: by default how much of the unseen data's instructions
        occurs in training (`overlap`), which every evaluation then reports."""
        overlap = self.overlap(tables)
        return {"overlap": overlap} if overlap else {}

    def overlap(self, tables: dict[str, pa.Table]) -> dict[str, float]:
        """How unseen the unseen instructions are: shares of them whose parts occur in the training data, as
        `<split>_<what>_in_train` (e.g. unseen_patterns_in_train). None by default."""
        return {}

    def read(self, data_dir: Path, tests_only: bool = False) -> tuple[dict[str, pa.Table], dict]:
        """Every split (or the test splits: names starting with "test"), each checked against the manifest's
        SHA-256: a corrupt file stops here, not mid-run."""
        rebuild = f"dvc repro {self.stage}" if self.stage else f"instdiv generate --task {self.name} --out {data_dir}"
        manifest = datafiles.read_manifest(data_dir, rebuild)
        return {name: datafiles.read(name, data_dir, manifest, self.columns, rebuild)
                for name in manifest["files"] if name.startswith("test") or not tests_only}, manifest

    # -------------------------------------------------------------------------------- model inputs
    def tokenizer(self, params: Params) -> Tokenizer:
        """The tokenizer of a model trained from scratch on this task."""
        raise NotImplementedError

    def examples(self, table: pa.Table) -> Examples:
        raise NotImplementedError

    def training_table(self, params: Params, tables: dict[str, pa.Table]) -> pa.Table:
        return tables["train"]

    def validation(self, params: Params, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        return {name.removeprefix("valid_"): t for name, t in tables.items() if name.startswith("valid_")}

    def test_sets(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        """The test splits by the name their metrics take: test_seen -> seen, test_small_k -> small_k."""
        return {name.removeprefix("test_"): t for name, t in tables.items() if name.startswith("test_")}

    def shape(self, params: Params, tables: dict[str, pa.Table], tokenizer: Tokenizer) -> tuple[int, int]:
        """(prompt width, block size) in tokens: the longest prompt, and the longest prompt + response + EOS
        - 1. By default read off the data; a task with a fixed shape derives it from its settings."""
        rows = [self.examples(t) for t in tables.values()]
        width = int(max(tokenizer.lengths(tokenizer.prompts(r.prompts)).max() for r in rows if r.prompts))
        longest = int(max(tokenizer.lengths(r.targets).max() for r in rows if r.targets))
        return width, width + longest

    # ------------------------------------------------------------------------------------- scoring
    def score(self, model, tokenizer: Tokenizer, tables: dict[str, pa.Table], params: Params, width: int,
              device, n_samples: int = 0):
        """Metrics on the test splits and a DataFrame of sample predictions. Default: greedy exact match."""
        from instdiv.engine.decoding import exact_match_scores

        return exact_match_scores(self, model, tokenizer, self.test_sets(tables), width,
                                  params.evaluate.batch_size, device, n_samples)

    def learned(self, metrics: dict, bar: float) -> bool | None:
        """Whether the model learned what it was trained on: every learned_metric present reaches `bar`. None
        when the task names none or `bar` is 0 (then runs are not judged)."""
        present = [metrics[m] for m in self.learned_metrics
                   if metrics.get(m) is not None and metrics[m] == metrics[m]]  # NaN: a split without such rows
        if not present or bar <= 0:
            return None
        return all(v >= bar for v in present)

    def headline(self, metrics: dict) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.endswith("accuracy"))

    # --------------------------------------------------------------------------------------- sweeps
    def axis_types(self) -> dict[str, Any]:
        """The keys a sweep axis may vary and their types: by default every key of the task's section."""
        section = self.sections[self.name]
        return {k: f.annotation for k, f in section.model_fields.items()}

    def trial_params(self, params: Params, point: dict) -> Params:
        """The full settings of one sweep point ({count_axis: I, other axes..., seed}): the task's section
        with the point's axes substituted, and the trial's seed and training budget."""
        section = getattr(params, self.name)
        changes = {k: v for k, v in point.items() if k != "seed"}
        if self.budget_key and params.sweep.total_examples is not None:
            changes.setdefault(self.budget_key, params.sweep.total_examples)
        train = params.train.replace(seed=point["seed"])
        if params.sweep.epochs is not None:  # a budget in epochs instead of train's
            train = train.replace(epochs=params.sweep.epochs, max_steps=None)
        return params.replace(**{self.name: section.replace(**changes), "train": train})

    def check_trial(self, params: Params) -> None:
        """Fail before any training when a sweep point's settings are impossible."""
        self.check(params)

    def trial_tables(self, params: Params) -> dict[str, pa.Table]:
        """A sweep trial's data (what `generate` writes, by default)."""
        return self.generate(params)

    def write_trial(self, tables: dict[str, pa.Table], params: Params, out_dir: Path) -> dict:
        """Write a trial's data as the stage would (its manifest's SHA-256 identifies the training data)."""
        return self.write(tables, params, out_dir)

    def label(self, axis: str, value) -> str | None:
        """How a figure labels an axis value, where the task knows better than str(value)."""
        return None

    def point_columns(self, params: Params, axes: list[str]) -> dict:
        """More columns for an experiment's point (e.g. the effective number of rules under skew)."""
        return {}
