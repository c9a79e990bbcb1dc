"""The code task: how its rows become prompts and responses, how a model's programs are scored (run in the
sandbox against hidden tests: pass@1), and how a sweep point becomes programs and a mix."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from instdiv.engine import decoding
from instdiv.engine.task import Examples, Task
from instdiv.engine.text import ByteTokenizer
from instdiv.errors import ConfigError
from instdiv.tasks.code import loaders, mix, programs, sandbox
from instdiv.tasks.code.config import CodeConfig, CodeModelConfig, MixConfig

RESPONSE = "\n### Response:\n"
MAX_BLOCK = 4096  # tokens per row (bytes for the GPT): beyond this set train.max_length


def text_prompt(instruction: str) -> str:
    return instruction + RESPONSE


def sandbox_limits(cm: CodeModelConfig) -> sandbox.Limits:
    return sandbox.Limits(seconds=cm.timeout_seconds, memory_mb=cm.memory_mb)


def score_programs(written: list[str], tests: list[str], limits: sandbox.Limits, workers: int | None):
    """pass@1 (the share that passes its tests in the sandbox), parse rate and the count of each status."""
    results = sandbox.run_many(list(zip(written, tests)), limits, workers)
    statuses = pd.Series([r.status for r in results])
    return {"pass_at_1": round(float(np.mean([r.passed for r in results])), 4) if results else float("nan"),
            "parse_rate": round(float(np.mean([sandbox.parses(p) for p in written])), 4) if written
            else float("nan"),
            "programs": len(written), "statuses": statuses.value_counts().to_dict()}, results


def benchmark_name(source: str) -> str:
    """humaneval -> humaneval, path/HumanEval.jsonl -> humaneval: the prefix of its metrics."""
    return re.sub(r"[^a-z0-9]+", "_", Path(source).name.split(".")[0].lower()).strip("_")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which c pass (Chen et al., 2021): 1 - C(n-c, k) / C(n, k),
    as a product so large n does not overflow."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def training_params(params, epochs: float | None = None):
    """`train` with the code model's budget (code_model.epochs, or `epochs`) and batch size, starting from
    code_model.base when one is given."""
    cm = params.code_model
    changes = {}
    if cm.base is not None:
        changes["model"] = params.model.replace(init=cm.base)
    return params.replace(train=params.train.replace(epochs=epochs or cm.epochs, max_steps=None,
                                                     batch_size=cm.batch_size), **changes)


class CodeTask(Task):
    name = "code"
    sections = {"code": CodeConfig, "mix": MixConfig, "code_model": CodeModelConfig}
    count_axis = "n_programs"
    count_label = "distinct training code programs I"
    metrics = ("pass_at_1", "parse_rate")
    metric_pattern = r"([a-z0-9_]+_)?(pass_at_\d+(_sampled)?|parse_rate)"
    # pass@1 on programs of the structures it trained on: a model that cannot write those says nothing about
    # the held-out ones
    seen_metric = "train_pass_at_1"
    learned_metrics = ("train_pass_at_1",)
    stage = "code_data"
    columns = tuple(programs.SCHEMA.names)

    def generate(self, params) -> dict[str, pa.Table]:
        return programs.generate(params.code)

    def check(self, params) -> None:
        programs.check_feasible(params.code)

    def write(self, tables, params, out_dir):
        return programs.write(tables, params.code, out_dir)

    def tokenizer(self, params):
        return ByteTokenizer()

    def examples(self, table: pa.Table) -> Examples:
        """Mix rows (instruction, response) or program rows (instruction, target)."""
        response = "response" if "response" in table.column_names else "target"
        return Examples([text_prompt(i) for i in table.column("instruction").to_pylist()],
                        table.column(response).to_pylist())

    def validation(self, params, tables):
        return {"unseen": tables["valid"]}

    def shape(self, params, tables, tokenizer) -> tuple[int, int]:
        """In tokens (bytes for the suite's GPT), over the training and validation rows: the longest prompt, and
        prompt + response (train.max_length cuts it, leaving the longer rows out)."""
        rows = [self.examples(self.training_table(params, tables)), self.examples(tables["valid"])]
        width = max(max(tokenizer.lengths(tokenizer.prompts(r.prompts))) for r in rows)
        block = width + max(max(tokenizer.lengths(r.targets)) for r in rows) + 1
        if block > MAX_BLOCK and params.train.max_length is None:
            raise ConfigError(f"code rows up to {block} tokens exceed {MAX_BLOCK}; set train.max_length (longer "
                              "rows are left out) or filter mix.code_source / mix.general_source first")
        return int(width), int(block)

    def run_programs(self, model, tok, instructions, tests, params, width: int, device):
        """Greedy programs for the instructions, run against their tests in the sandbox."""
        prompts = [text_prompt(i) for i in instructions]
        written = decoding.complete(model, tok, prompts, width, params.evaluate.batch_size, device)
        metrics, results = score_programs(written, tests, sandbox_limits(params.code_model), params.code_model.workers)
        # A prompt longer than any the model trained on gets no program (benchmarks at laptop scale): say how many
        metrics["prompts_fitting"] = int((tok.lengths(tok.prompts(prompts)) <= width).sum())
        return metrics, written, results

    def sampled(self, model, tok, instructions, tests, params, width: int, device, prefix: str) -> dict:
        """pass@k (code_model.pass_at_k) from code_model.samples programs per problem sampled at its
        temperature, each run in the sandbox."""
        cm = params.code_model
        prompts = [text_prompt(i) for i in instructions for _ in range(cm.samples)]
        written = decoding.complete(model, tok, prompts, width, params.evaluate.batch_size, device,
                                    temperature=cm.temperature, seed=params.train.seed)
        metrics, results = score_programs(written, [t for t in tests for _ in range(cm.samples)],
                                          sandbox_limits(cm), cm.workers)
        passed = np.array([r.passed for r in results]).reshape(len(instructions), cm.samples).sum(1)
        return {f"{prefix}pass_at_{k}_sampled": round(float(np.mean([pass_at_k(cm.samples, c, k) for c in passed])), 4)
                for k in cm.pass_at_k}

    def score(self, model, tok, tables, params, width: int, device, n_samples: int = 0):
        """pass@1 and parse rate on the held-out programs, the share of each sandbox status, and the first
        `n_samples` programs: what was asked, expected and written, and how it ran."""
        test = tables["test"].to_pydict()
        metrics, written, results = self.run_programs(model, tok, test["instruction"], test["test"], params, width,
                                                      device)
        if params.code_model.samples:
            metrics.update(self.sampled(model, tok, test["instruction"], test["test"], params, width, device, ""))
        metrics.update({f"share_{k}": metrics["statuses"].get(k, 0) / metrics["programs"]
                        for k in sandbox.STATUSES})
        if "train_programs" in tables:  # as many of its own training programs, drawn once
            train = tables["train_programs"]
            pick = np.sort(np.random.default_rng(0).permutation(train.num_rows)[:tables["test"].num_rows])
            own = train.take(pick).to_pydict()
            seen, _, _ = self.run_programs(model, tok, own["instruction"], own["test"], params, width, device)
            metrics.update(train_pass_at_1=seen["pass_at_1"], train_parse_rate=seen["parse_rate"])
        for bench in params.code_model.benchmarks:  # real benchmarks (humaneval), asked as in the paper's table
            problems = loaders.load_benchmark(bench)
            asks = [f"Complete this Python function:\n{p['prompt']}" for p in problems]
            scored, _, _ = self.run_programs(model, tok, asks, [p["test"] for p in problems], params, width, device)
            name = benchmark_name(bench)
            metrics.update({f"{name}_pass_at_1": scored["pass_at_1"], f"{name}_parse_rate": scored["parse_rate"],
                            f"{name}_prompts_fitting": scored["prompts_fitting"], f"{name}_problems": len(problems)})
            if params.code_model.samples:
                metrics.update(self.sampled(model, tok, asks, [p["test"] for p in problems], params, width, device,
                                            f"{name}_"))
        samples = pd.DataFrame({"structure": test["structure"], "instruction": test["instruction"],
                                "expected": test["target"], "written": written,
                                "status": [r.status for r in results]}).head(n_samples)
        return metrics, samples

    def headline(self, metrics: dict) -> str:
        return f"pass@1 {metrics['pass_at_1']:.3f}, parses {metrics['parse_rate']:.3f} ({metrics['programs']} programs)"

    def axis_types(self):
        return {**{k: f.annotation for k, f in CodeConfig.model_fields.items()}, "general_percent": int}

    def trial_params(self, params, point: dict):
        """A code trial: `code` with n_programs (and the point's other code axes), `mix` with one general share,
        the code model's training budget. The budget is fixed: unless examples_per_program is an axis, it is
        spread evenly over the programs, so fewer programs means more examples of each; a general share then
        replaces code rows, as in the mix stage, rather than drawing other ones."""
        s, m = params.sweep, params.mix
        changes = {k: v for k, v in point.items() if k != "seed"}
        percent = changes.pop("general_percent", 0)
        total = s.total_examples or m.total_examples
        changes.setdefault("examples_per_program", max(1, math.ceil(total / changes["n_programs"])))
        p = training_params(params, s.epochs)
        return p.replace(code=params.code.replace(**changes), train=p.train.replace(seed=point["seed"]),
                         mix=m.replace(total_examples=total, general_percents=[percent]))

    def check_trial(self, params) -> None:
        if params.mix.code_source is not None:
            raise ConfigError(f"sweep.task=code varies the synthetic code programs, but mix.code_source="
                              f"{params.mix.code_source}; set mix.code_source to null for the sweep")
        programs.check_feasible(params.code)
        n_code = mix.counts(params.mix, params.mix.general_percents[0])[1]
        if params.code.n_programs * params.code.examples_per_program < n_code:
            raise ConfigError(f"{params.code.n_programs} programs x code.examples_per_program="
                              f"{params.code.examples_per_program} give fewer than the {n_code} code rows of the "
                              "budget; raise examples_per_program or leave it out of sweep.axes (then the budget "
                              "sets it)")

    def trial_tables(self, params) -> dict[str, pa.Table]:
        """Programs at the point, and the training set: the point's general share at the fixed budget (the
        held-out programs are the same at every point: programs.generate draws them first)."""
        tables = programs.generate(params.code)
        train = mix.build(params.mix, params.mix.general_percents[0], programs.pairs(tables["train"]))
        return {**tables, "train": train, "train_programs": tables["train"]}

    def write_trial(self, tables, params, out_dir):
        """What a trial logs as its training data: the mix."""
        from instdiv.engine import data as datafiles

        about = {"code": params.code.model_dump(), "mix": params.mix.model_dump()}
        return datafiles.write({"train": tables["train"]}, out_dir, task="mix", params=about)


TASK = CodeTask()
