"""The package's shape: a task or a model family is one module, found without editing the engine; no import
cycle; the engine never imports a task or a model; DVC stage deps cover what each stage's command runs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, write_params

PACKAGE = REPO / "src" / "instdiv"

TOY_TASK = '''
"""Reverse a word: a toy task, to show that a task is one module and one params section."""

from typing import ClassVar

import numpy as np
import pyarrow as pa

from instdiv.config import Section
from instdiv.engine.task import Examples, Task
from instdiv.engine.text import CharTokenizer

LETTERS = "abcdef"


class ReverseConfig(Section):
    section: ClassVar[str] = "reverse"
    n_words: int = 40  # distinct training words: the count a sweep varies
    repeats: int = 6
    length: int = 3
    n_test: int = 16
    seed: int = 0


class ReverseTask(Task):
    name = "reverse"
    sections = {"reverse": ReverseConfig}
    count_axis = "n_words"

    def generate(self, params):
        c = params.reverse
        rng = np.random.default_rng(c.seed)
        pool = [str(w) for w in rng.permutation(sorted({"".join(rng.choice(list(LETTERS), c.length))
                                                         for _ in range(4000)}))]
        train, valid, test = pool[:c.n_words], pool[-2 * c.n_test:-c.n_test], pool[-c.n_test:]

        def table(words):
            return pa.table({"input": words, "output": [w[::-1] for w in words]})

        return {"train": table(train * c.repeats), "valid_unseen": table(valid), "test_seen": table(train[:c.n_test]),
                "test_unseen": table(test)}

    def tokenizer(self, params):
        return CharTokenizer("_$>" + LETTERS)

    def examples(self, table):
        d = table.to_pydict()
        return Examples([w + ">" for w in d["input"]], d["output"])


TASK = ReverseTask()
'''

TOY_MODEL = '''
"""A GRU language model: a toy model family, to show that a model kind is one module."""

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from instdiv.config import Section
from instdiv.engine.model import ModelFamily


class ToySection(Section):
    section: ClassVar[str] = "model"
    kind: Literal["toy"] = "toy"
    hidden: int = 32


class ToyLM(torch.nn.Module):
    def __init__(self, vocab_size, block_size, hidden):
        super().__init__()
        self.spec = {"vocab_size": vocab_size, "block_size": block_size, "hidden": hidden}
        self.block_size = block_size
        self.emb = torch.nn.Embedding(vocab_size, hidden)
        self.rnn = torch.nn.GRU(hidden, hidden, batch_first=True)
        self.out = torch.nn.Linear(hidden, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.out(self.rnn(self.emb(idx))[0])
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, prompt, prompt_mask, max_new_tokens, eos_id, pad_id=0):
        seq, done, out = prompt, torch.zeros(len(prompt), dtype=torch.bool), []
        for _ in range(max_new_tokens):
            token = self(seq)[0][:, -1].argmax(-1).masked_fill(done, pad_id)
            out.append(token)
            done |= token == eos_id
            if done.all():
                break
            seq = torch.cat([seq, token[:, None]], 1)
        return torch.stack(out, 1)

    def configure_optimizer(self, lr, weight_decay):
        return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())


class ToyFamily(ModelFamily):
    kind = "toy"
    Config = ToySection

    def build(self, cfg, tokenizer, block_size):
        return ToyLM(tokenizer.vocab_size, block_size, cfg.hidden)

    def spec(self, network):
        return network.spec

    def rebuild(self, spec):
        return ToyLM(**spec)


FAMILY = ToyFamily()
'''


def plugin(root: Path, package: str, name: str, source: str) -> Path:
    """A module in its own directory on the path (never in this repository): instdiv/<package>/<name>.py."""
    folder = root / "plugins" / "instdiv" / package
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return root / "plugins"


def cli(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "instdiv", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_a_new_task_is_one_module_and_one_params_section(tiny, in_tmp):
    """generate, train, evaluate and a two-point sweep on a task the package has never heard of."""
    path = plugin(in_tmp, "tasks", "reverse", TOY_TASK)
    env = {**os.environ, "PYTHONPATH": str(path)}
    tiny["reverse"] = {"n_words": 40}
    tiny["train"].update(max_steps=60, val_every_steps=20)
    tiny["sweep"].update(task="reverse", metric="unseen_accuracy", mode="grid", instructions=[10, 40])
    write_params(in_tmp / "params.yaml", tiny)

    assert "wrote data/reverse: train 240" in cli("generate", "--task", "reverse", cwd=in_tmp, env=env).stdout
    cli("train", "--task", "reverse", cwd=in_tmp, env=env)
    assert (in_tmp / "models/reverse.pt").is_file()
    assert (in_tmp / "reports/reverse/plots/val_accuracy.csv").is_file()
    out = cli("evaluate", "--task", "reverse", cwd=in_tmp, env=env)
    assert "seen_accuracy" in out.stdout and "unseen_accuracy" in out.stdout
    metrics = yaml.safe_load((in_tmp / "reports/reverse/metrics.json").read_text())
    assert metrics["unseen_examples"] == 16 and metrics["seen_examples"] == 16
    assert metrics["seen_accuracy"] > 0.5  # 60 steps learn to reverse the training words, mostly

    cli("sweep", cwd=in_tmp, env=env)
    trials = pd.read_csv(in_tmp / "reports/sweep/trials.csv")
    assert sorted(trials["n_words"]) == [10, 40] and set(trials["state"]) == {"COMPLETE"}
    assert trials["unseen_accuracy"].between(0, 1).all()
    # and nothing in the repository knows about it
    assert not list(PACKAGE.rglob("reverse*"))


def test_a_new_model_kind_is_one_module(tiny, in_tmp, monkeypatch):
    """Any small nn.Module behind the model interface trains, is saved and loaded, and decodes."""
    from instdiv.engine import model as models, stages
    from instdiv.params import params_from_dict
    from instdiv.tasks.rewrite import TASK

    monkeypatch.syspath_prepend(str(plugin(in_tmp, "models", "toy", TOY_MODEL)))
    tiny["model"] = {"kind": "toy", "hidden": 48}
    p = params_from_dict(tiny)
    assert p.model.hidden == 48
    data = Path("data/rewrite")
    stages.generate(p, TASK, data)
    info = stages.train(p, TASK, data, Path("models/toy.pt"), None)
    assert info["steps"] == 30 and info["parameters"] > 0
    network, extras = models.load(Path("models/toy.pt"))
    assert type(network).__name__ == "ToyLM" and extras["prompt_width"] > 0
    metrics = stages.evaluate(p, TASK, data, Path("models/toy.pt"), Path("reports/toy"), "train it")
    assert 0 <= metrics["unseen_op_accuracy"] <= 1 and metrics["seen_examples"] == 64
    predictions = pd.read_csv("reports/toy/predictions.csv")
    assert len(predictions) == 10 and predictions["predicted"].notna().all()


# ---------------------------------------------------------------------------------------------- imports

def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, counting every import statement (lazy ones included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_no_import_cycle_and_the_engine_never_imports_a_task_or_a_model():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    for name, edges in graph.items():
        if name.startswith("instdiv.engine"):
            bad = [e for e in edges if e.startswith(("instdiv.tasks.", "instdiv.models."))]
            assert not bad, f"{name} imports {bad}"
        if name.startswith("instdiv.tasks."):
            own = ".".join(name.split(".")[:3])
            other = [e for e in edges if e.startswith("instdiv.tasks.") and not e.startswith(own)]
            assert not other, f"{name} imports another task: {other}"


def _stages(dvc_file: Path):
    for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
        stage = stage.get("do", stage)
        if stage["cmd"].startswith("instdiv "):
            yield name, stage


def test_stage_deps_cover_every_module_their_command_runs():
    """Each stage's code deps cover the modules its command imports: the CLI, every task and model family
    (the registry imports them all) and what they import, lazily or not."""
    import typer.main

    from instdiv import registry
    from instdiv.cli import app

    graph = import_graph()
    commands = {c.name or c.callback.__name__: c.callback for c in app.registered_commands}
    discovered = {m.__name__ for package in ("instdiv.tasks", "instdiv.models") for m in registry.modules(package)}
    for dvc_file, root in ((REPO / "dvc.yaml", REPO), (REPO / "experiments/dvc.yaml", REPO)):
        for name, stage in _stages(dvc_file):
            command = stage["cmd"].split()[1]
            fn = commands.get(command) or commands.get(command.replace("-", "_"))
            assert fn is not None, f"{name}: no command {command}"
            start = {"instdiv.cli", *discovered}
            for node in ast.walk(ast.parse(textwrap.dedent(typer.main.inspect.getsource(fn)))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("instdiv"):
                    start |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in graph else node.module
                              for a in node.names}
            seen, todo = set(), [m for m in start if m in graph]
            while todo:
                m = todo.pop()
                if m not in seen:
                    seen.add(m)
                    todo += graph[m]
            deps = [root / d for d in stage.get("deps", [])]
            for module in seen:
                file = PACKAGE.parent.joinpath(*module.split("."))
                file = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
                assert any(file == d or d in file.parents for d in deps), \
                    f"{dvc_file.name}:{name} runs {file.relative_to(REPO)} but does not depend on it"


@pytest.mark.slow
def test_the_gpu_benchmark_runs_on_a_cpu(tmp_path):
    """benchmarks/gpu.py is for a GPU machine, where time is short: its --quick form runs every part on a CPU
    (5 to 10 minutes here), so the script that reaches the GPU has run before."""
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/gpu.py"), "--quick", "--device", "cpu", "--json", str(out)],
                   check=True, capture_output=True, timeout=1800)
    result = json.loads(out.read_text())
    assert set(result) >= {"peak", "step", "lightning", "largebatch", "concurrent", "paper"}
    assert {"seen_op_accuracy", "unseen_op_accuracy"} <= set(result["largebatch"]["batch256"])
    assert result["step"]["laptop"]["plain"]["tokens_per_s"] > 0 and result["peak"]["tflops"] > 0
    assert 0 < result["lightning"]["none"]["lightning_over_bare"] < 2
    assert result["concurrent"]["suite_runs"]["threshold"] == 12 and result["concurrent"]["suite_minutes_training"] > 0
    assert result["paper"]["epochs_run"] >= 1 and "seen_accuracy" in result["paper"]["per_epoch"][0]
