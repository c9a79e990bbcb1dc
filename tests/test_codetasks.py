"""Synthetic code tasks, general-domain tasks, the mix at a fixed budget and the loaders of real data."""

from __future__ import annotations

import collections
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instdiv.tasks.code import general, loaders, mix, programs as codetasks, sandbox
from instdiv.tasks.code.config import CodeConfig, MixConfig
from instdiv.errors import ConfigError, DataError

CODE = CodeConfig(n_programs=30, examples_per_program=3, depth=[1, 3], n_test_programs=8, tests_per_program=4)


def test_every_target_passes_its_hidden_tests_in_the_sandbox():
    tables = codetasks.generate(CODE)
    rows = [r for t in tables.values() for r in t.to_pylist()]
    results = sandbox.run_many([(r["target"], r["test"]) for r in rows], sandbox.Limits(seconds=10))
    assert all(r.passed for r in results), [r for r in results if not r.passed][:3]
    assert all(r["test"].count("assert ") == 4 and r["entry_point"] == "solve" for r in rows)


def test_held_out_programs_are_unseen_structures():
    t = codetasks.generate(CODE)
    structures = {name: set(t[name].column("structure").to_pylist()) for name in t}
    assert len(structures["train"]) == 30 and len(structures["test"]) == 8 and len(structures["valid"]) == 8
    assert not structures["train"] & structures["test"] and not structures["train"] & structures["valid"]
    assert not structures["test"] & structures["valid"]
    per_program = collections.Counter(t["train"].column("program_id").to_pylist())
    assert set(per_program.values()) == {3}


def test_held_out_rows_do_not_depend_on_the_training_knobs():
    # A sweep over programs x examples per program compares models on one test set.
    base = codetasks.generate(CODE)
    for change in ({"n_programs": 60}, {"examples_per_program": 7}):
        other = codetasks.generate(CODE.replace(**change))
        assert other["test"].equals(base["test"]) and other["valid"].equals(base["valid"])
        assert not other["train"].equals(base["train"])


def test_an_instruction_describes_its_program():
    import numpy as np

    instruction, target = codetasks.instruction_and_target(np.random.default_rng(0), ("add", "keep_even", "sum"))
    assert instruction.startswith("Write a Python function solve(xs) for a list of integers xs: ")
    assert "then" in instruction and target.splitlines()[0] == "def solve(xs):"
    namespace = {}
    exec(target, namespace)
    c = int(target.splitlines()[1].split("+ ")[1].split(" ")[0])
    assert namespace["solve"]([1, 2, 3]) == sum(x + c for x in [1, 2, 3] if (x + c) % 2 == 0)


def test_code_generation_is_deterministic_and_checked():
    a, b = codetasks.generate(CODE), codetasks.generate(CODE)
    assert all(a[k].equals(b[k]) for k in a)
    with pytest.raises(ConfigError, match="code.n_programs or code.n_test_programs"):
        codetasks.generate(CODE.replace(n_programs=10**6, depth=1))
    with pytest.raises(ConfigError, match="code.depth"):
        codetasks.generate(CODE.replace(depth=[3, 1]))


def test_general_tasks_by_hand():
    import numpy as np

    assert general.number_words(47) == "forty-seven" and general.number_words(305) == "three hundred five"
    assert general.number_words(0) == "zero" and general.number_words(90) == "ninety"
    rng = np.random.default_rng(0)
    for q, a in general.TASKS["arithmetic"](rng, 50):
        words = q.removeprefix("What is ").removesuffix("? Answer in words.").split(" ")
        assert words[1] in ("plus", "minus", "times") and a == general.number_words(
            eval(f"{general.ONES.index(words[0])} {dict(plus='+', minus='-', times='*')[words[1]]} "
                 f"{general.ONES.index(words[2])}"))
    for q, a in general.TASKS["rewrite"](rng, 50):
        pattern, text, replacement = q.split("'")[1], q.split("'")[3], q.split("'")[5]
        assert a == text.replace(pattern, replacement, 1)
    for q, a in general.TASKS["words"](rng, 50):
        w = q.split("'")[1]
        assert a in (w[::-1], w.upper(), "".join(c * 2 for c in w), general.number_words(len(w)))
    assert len(general.TASKS) >= 10  # the kinds of general-domain task: their diversity is what the paper varies
    for q, a in general.TASKS["sort_words"](rng, 20):
        assert a.split(", ") == sorted(q.split(": ")[1].rstrip(".").split(", "))
    for q, a in general.TASKS["count_letter"](rng, 20):
        c, w = q.split("'")[1], q.split("'")[3]
        assert a == general.number_words(w.count(c))
    for q, a in general.TASKS["acronym"](rng, 20):
        assert a == "".join(w[0] for w in q.split("'")[1].split()).upper()
    for q, a in general.TASKS["compare"](rng, 20):
        a_, b_ = q.rstrip("?").split(", ")[1].split(" or ")
        values = {general.number_words(v): v for v in range(100)}
        pick = max if "larger" in q else min
        assert values[a] == pick(values[a_], values[b_])
    for q, a in general.TASKS["digits_to_words"](rng, 20):
        assert a == general.number_words(int(q.split()[3]))
    for q, a in general.TASKS["next_letters"](rng, 20):
        assert a == "".join(chr((ord(c) - 97 + 1) % 26 + 97) for c in q.split("'")[1])
    for q, a in general.TASKS["remove_vowels"](rng, 20):
        assert a == "".join(c for c in q.split("'")[1] if c not in "aeiou")
    for q, a in general.TASKS["yes_no_palindrome"](rng, 40):
        w = q.split("'")[1]
        assert a == ("yes" if w == w[::-1] else "no")
    for q, a in general.TASKS["list_position"](rng, 20):
        ordinal, words = q.removeprefix("What is the ").split(" word in: ")
        k = ["first", "second", "third", "fourth", "fifth", "sixth"].index(ordinal)
        assert a == words.rstrip("?").split()[k]


@pytest.mark.parametrize("percent", [0, 5, 10, 25, 100])
def test_mix_proportions_are_exact_at_a_fixed_budget(percent):
    pairs = [(f"code task {i}", f"def solve(xs):\n    return {i}\n") for i in range(300)]
    cfg = MixConfig(total_examples=210, general_tasks=["rewrite", "arithmetic", "words"])
    table = mix.build(cfg, percent, pairs)
    sources = collections.Counter(table.column("source").to_pylist())
    assert table.num_rows == 210 and sources["code"] == 210 - round(percent * 2.1)
    assert sum(v for k, v in sources.items() if k != "code") == round(percent * 2.1)
    if 0 < percent < 100:
        assert set(sources) == {"code", "rewrite", "arithmetic", "words"}
        fewer = mix.build(cfg, percent // 2, pairs)
        code = set(table.filter(pa.compute.equal(table["source"], "code")).column("instruction").to_pylist())
        more_code = set(fewer.filter(pa.compute.equal(fewer["source"], "code")).column("instruction").to_pylist())
        assert code <= more_code  # a larger share replaces code rows, it does not redraw them
    assert mix.build(cfg, percent, pairs).equals(table)


def test_mix_bad_settings_name_the_key():
    pairs = [("q", "a")] * 10
    with pytest.raises(ConfigError, match="mix.total_examples"):
        mix.build(MixConfig(total_examples=100), 10, pairs)
    with pytest.raises(ConfigError, match=r"mix.general_percents=\[0, 150\]"):
        mix.build(MixConfig(general_percents=[0, 150]), 0, pairs)
    with pytest.raises(ConfigError, match="mix.general_tasks=.*choose from rewrite, arithmetic, words, sort_words"):
        mix.build(MixConfig(general_tasks=["poetry"]), 10, pairs)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_loaders_read_the_common_schemas(tmp_path):
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Give a synonym.", "input": "happy", "output": "glad"},
        {"instruction": "Say hi.", "input": "", "output": "hi"}])
    assert loaders.load_instructions(alpaca) == [("Give a synonym.\n\nhappy", "glad"), ("Say hi.", "hi")]
    oss = tmp_path / "oss.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "Add two numbers.", "solution": "def add(a, b):\n    return a + b",
                                          "lang": "python"}]), oss)
    assert loaders.load_instructions(str(oss)) == [("Add two numbers.", "def add(a, b):\n    return a + b")]
    cot = tmp_path / "cot.json"
    cot.write_text(json.dumps([{"source": "2 + 2?", "rationale": "Two and two make four.", "target": "4",
                                "task": "math"}]))
    assert loaders.load_instructions(str(cot)) == [("2 + 2?", "Two and two make four. So the answer is 4")]
    table = mix.build(MixConfig(total_examples=3, general_source=alpaca), 33, [("c1", "x"), ("c2", "y")])
    assert collections.Counter(table.column("source").to_pylist()) == {"code": 2, alpaca: 1}


def test_loaders_reject_bad_files(tmp_path):
    with pytest.raises(DataError, match="none of the known schemas"):
        loaders.load_instructions(write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}]))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": \n')
    with pytest.raises(DataError, match="not readable as jsonl"):
        loaders.load_instructions(str(broken))
    with pytest.raises(DataError, match="file not found"):
        loaders.load_instructions(str(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not readable as parquet"):
        loaders.load_instructions(str(tmp_path / "bad.parquet"))


def test_benchmarks_in_humaneval_and_mbpp_form_run_through_the_sandbox(tmp_path):
    humaneval = write_jsonl(tmp_path / "he.jsonl", [{
        "task_id": "HumanEval/0", "entry_point": "add",
        "prompt": 'def add(a, b):\n    """Return a + b."""\n',
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"}])
    mbpp = write_jsonl(tmp_path / "mbpp.jsonl", [{
        "task_id": 2, "text": "Write a function to square a number.", "code": "def square(x):\n    return x * x\n",
        "test_list": ["assert square(3) == 9", "assert square(-2) == 4"], "test_setup_code": ""}])
    he, mb = loaders.load_benchmark(humaneval), loaders.load_benchmark(mbpp)
    assert he[0]["entry_point"] == "add" and mb[0]["entry_point"] == "square"
    assert "assert square(3) == 9" in mb[0]["prompt"]
    good = [he[0]["prompt"] + "    return a + b\n", "def square(x):\n    return x * x\n"]
    bad = [he[0]["prompt"] + "    return a - b\n", "def square(x):\n    return x + x\n"]
    problems = he + mb
    assert [r.passed for r in sandbox.run_many([(p, q["test"]) for p, q in zip(good, problems)])] == [True, True]
    assert [r.passed for r in sandbox.run_many([(p, q["test"]) for p, q in zip(bad, problems)])] == [False, False]
