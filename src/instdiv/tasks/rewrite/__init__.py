"""The string-rewrite task of the paper: follow a rule x -> y on an input, for rules never seen in training.

Data (instdiv/tasks/rewrite/generator.py), its section (config.py), the prompt and vocabulary (text.py) and
the semantic families (families.py). Scored by exact match, overall and separately on op rows (the input
holds the pattern) and no-op rows (it does not, so the output is the input).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from instdiv.engine import data as datafiles
from instdiv.engine.task import Examples, Task
from instdiv.tasks.rewrite import generator, text
from instdiv.tasks.rewrite.config import RewriteConfig


class RewriteTask(Task):
    name = "rewrite"
    sections = {"rewrite": RewriteConfig}
    count_axis = "n_instructions"
    count_label = "distinct training instructions I"
    groups = ("op", "noop")
    # The headline: a model that memorised its rules still copies every unseen no-op input right, so unseen
    # accuracy floors at the no-op share, not at 0.
    monitor = "unseen_op_accuracy"
    metrics = ("seen_accuracy", "unseen_accuracy", "unseen_op_accuracy")
    seen_metric = "seen_op_accuracy"
    # A model that learned its rules applies them (op) and leaves inputs without the pattern alone (no-op).
    learned_metrics = ("seen_op_accuracy", "seen_noop_accuracy")
    metric_pattern = r"[a-z_]+_(accuracy|op_accuracy|noop_accuracy)"
    columns = generator.COLUMNS
    stage = "generate"

    def generate(self, params) -> dict[str, pa.Table]:
        return generator.generate(params.rewrite)

    def check(self, params) -> None:
        generator.check_feasible(params.rewrite)

    def write(self, tables, params, out_dir: Path) -> dict:
        cfg = params.rewrite
        return datafiles.write(tables, out_dir, task=self.name, params=cfg.model_dump(), holdout=cfg.holdout,
                               **self.manifest_extras(tables, params))

    def overlap(self, tables) -> dict[str, float]:
        """For each split of unseen rules: the share of its rules whose pattern is a training pattern, and
        whose replacement is a training pattern or replacement. With 8 letters and length 3 most are (512
        patterns in all); with 26 letters few, and none of the patterns under holdout: patterns."""
        train = tables["train"]
        patterns = set(train.column("pattern").to_pylist())
        strings = patterns | set(train.column("replacement").to_pylist())
        shares = {}
        for name, table in self.test_sets(tables).items():
            if name == "seen":
                continue
            rules = set(zip(table.column("pattern").to_pylist(), table.column("replacement").to_pylist()))
            shares[f"{name}_patterns_in_train"] = round(sum(p in patterns for p, _ in rules) / len(rules), 4)
            shares[f"{name}_replacements_in_train"] = round(sum(r in strings for _, r in rules) / len(rules), 4)
        return shares

    def tokenizer(self, params):
        return text.TOKENIZER

    def examples(self, table: pa.Table) -> Examples:
        d = table.to_pydict()
        return Examples(text.prompts(d), d["output"], ["noop" if n else "op" for n in d["is_noop"]])

    def shape(self, params, tables, tokenizer) -> tuple[int, int]:
        """Fixed by the settings in the task's own characters, so every split of every seed fits; a
        pretrained model's tokenizer (and prompt format) is measured on the data instead."""
        if tokenizer is text.TOKENIZER:
            return text.sequence_lengths(params.rewrite)
        return super().shape(params, tables, tokenizer)

    def headline(self, metrics: dict) -> str:
        groups = ", ".join(f"{g.replace('noop', 'no-op')} {metrics[f'unseen_{g}_accuracy']:.3f}" for g in self.groups
                           if f"unseen_{g}_accuracy" in metrics)
        return f"seen accuracy {metrics['seen_accuracy']:.3f} | unseen accuracy {metrics['unseen_accuracy']:.3f} ({groups})"

    def trial_params(self, params, point: dict):
        """The point's axes in `rewrite` (its seed included: each seed draws its own rules); a budget N from
        sweep.total_examples unless the point gives S (then N = I x S)."""
        changes = dict(point)
        if params.sweep.total_examples is not None:
            changes.setdefault("total_examples", params.sweep.total_examples)
        if changes.get("total_examples") is not None:
            changes.setdefault("examples_per_instruction", None)
        if changes.get("examples_per_instruction") is not None:
            changes["total_examples"] = None
        train = params.train.replace(seed=point["seed"])
        if params.sweep.epochs is not None:  # a budget in epochs instead of train's
            train = train.replace(epochs=params.sweep.epochs, max_steps=None)
        return params.replace(rewrite=params.rewrite.replace(**changes), train=train)

    def label(self, axis: str, value) -> str | None:
        if axis == "skew" and value in (None, 1):
            return "1 (uniform)"
        return None

    def point_columns(self, params, axes: list[str]) -> dict:
        """Under skew, how many rules the examples effectively cover (exp entropy) and hold 99% of them, and the
        share of the examples that is the one-per-rule floor (the realised distribution, not the nominal)."""
        if "skew" not in axes:
            return {}
        cfg = params.rewrite
        counts = generator.split_counts(cfg.train_examples, cfg.n_instructions, cfg.skew)
        return {"effective_instructions": round(generator.effective_instructions(counts), 1),
                "instructions_holding_99pct": generator.instructions_holding(counts, 0.99),
                # the one example every rule keeps whatever the power law says: beyond the nominal curve
                "floor_share": round(cfg.n_instructions / cfg.train_examples, 4)}


TASK = RewriteTask()
