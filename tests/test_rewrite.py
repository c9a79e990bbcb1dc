"""The rewrite task's semantics and the generator's guarantees: exact outputs, disjoint unseen rules,
exact counts and shares, determinism."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from instdiv.engine import data as datafiles
from instdiv.errors import ConfigError
from instdiv.params import params_from_dict
from instdiv.tasks.rewrite import TASK, generator as rewrite
from instdiv.tasks.rewrite.config import RewriteConfig

from conftest import TINY


@pytest.mark.parametrize("pattern,replacement,text,expected", [
    ("aa", "bac", "caaba", "cbacba"),  # the paper's examples
    ("iss", "art", "mississippi", "martissippi"),
    ("iss", "art", "canada", "canada"),  # no-op: pattern absent
    ("ab", "x", "abab", "xab"),  # several occurrences: only the leftmost
    ("aa", "b", "aaaa", "baa"),  # overlapping occurrences: leftmost, once
    ("aba", "c", "ababa", "cba"),  # overlapping: the one starting first wins
    ("ab", "cd", "abcd", "cdcd"),  # at the start
    ("cd", "x", "abcd", "abx"),  # at the end
    ("abcd", "e", "abcd", "e"),  # the whole input
    ("b", "bb", "abc", "abbc"),  # replacement contains the pattern: still once
])
def test_apply_rule_hand_made(pattern, replacement, text, expected):
    assert rewrite.apply_rule(pattern, replacement, text) == expected


def write(c: RewriteConfig, out):
    """The generate stage's files for a config."""
    return TASK.write(rewrite.generate(c), params_from_dict({"rewrite": c.model_dump()}), out)


def cfg(**overrides) -> RewriteConfig:
    return RewriteConfig(**TINY["rewrite"]).replace(**overrides)


def rules(table) -> set[tuple[str, str]]:
    return set(zip(table.column("pattern").to_pylist(), table.column("replacement").to_pylist()))


@pytest.mark.parametrize("overrides", [{}, {"pattern_length": [1, 3], "replacement_length": [1, 4]},
                                       {"holdout": "patterns"}, {"noop_share": 0.5}])
def test_every_row_obeys_the_rule(overrides):
    c = cfg(**overrides)
    for name, table in rewrite.generate(c).items():
        d = table.to_pydict()
        for p, r, x, y, noop in zip(d["pattern"], d["replacement"], d["input"], d["output"], d["is_noop"]):
            assert y == rewrite.apply_rule(p, r, x), name
            assert noop == (p not in x), name
            assert len(x) == c.input_length and p != r
        assert sum(d["is_noop"]) == round(c.noop_share * table.num_rows), name


def test_op_inputs_may_hold_the_pattern_more_than_once():
    d = rewrite.generate(cfg(alphabet_size=2, pattern_length=1, replacement_length=2,
                             n_unseen_instructions=1, n_instructions=2, noop_share=0.0, total_examples=20,
                             n_test_examples=4, n_valid_examples=4))["train"].to_pydict()
    assert any(x.count(p) > 1 for p, x in zip(d["pattern"], d["input"]))


@pytest.mark.parametrize("holdout", ["pairs", "patterns", "strings"])
def test_unseen_rules_are_disjoint_from_training(holdout):
    t = rewrite.generate(cfg(holdout=holdout, alphabet_size=8))
    train = rules(t["train"])
    assert len(train) == TINY["rewrite"]["n_instructions"]
    assert rules(t["test_seen"]) <= train and rules(t["valid_seen"]) <= train
    for split in ("test_unseen", "valid_unseen"):
        assert not rules(t[split]) & train
        assert len(rules(t[split])) == TINY["rewrite"]["n_unseen_instructions"]
    assert not rules(t["test_unseen"]) & rules(t["valid_unseen"])
    train_patterns = {p for p, _ in train}
    unseen_patterns = {p for p, _ in rules(t["test_unseen"]) | rules(t["valid_unseen"])}
    if holdout in ("patterns", "strings"):
        assert not train_patterns & unseen_patterns
    if holdout == "strings":  # neither string of an unseen rule is used by a training rule, in either role
        assert not {s for rule in train for s in rule} & {s for rule in rules(t["test_unseen"]) for s in rule}
    # the manifest says how unseen the unseen rules are: the share whose pattern (replacement) is in training
    shares = TASK.overlap(t)
    test = rules(t["test_unseen"])
    train_strings = {s for rule in train for s in rule}
    assert shares["unseen_patterns_in_train"] == round(sum(p in train_patterns for p, _ in test) / len(test), 4)
    assert shares["unseen_replacements_in_train"] == round(sum(r in train_strings for _, r in test) / len(test), 4)
    if holdout != "pairs":
        assert shares["unseen_patterns_in_train"] == 0
    if holdout == "strings":
        assert shares["unseen_replacements_in_train"] == 0
    ids = [set(t[s].column("instruction_id").to_pylist()) for s in ("train", "test_unseen", "valid_unseen")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_seen_test_inputs_are_new():
    t = rewrite.generate(cfg())
    train = set(zip(t["train"].column("instruction_id").to_pylist(), t["train"].column("input").to_pylist()))
    for split in ("test_seen", "valid_seen"):
        pairs = zip(t[split].column("instruction_id").to_pylist(), t[split].column("input").to_pylist())
        assert not set(pairs) & train


def test_examples_per_instruction_and_budget():
    t = rewrite.generate(cfg(total_examples=None, examples_per_instruction=7))["train"]
    counts = np.bincount(t.column("instruction_id").to_numpy())
    assert t.num_rows == 32 * 7 and set(counts.tolist()) == {7}
    t = rewrite.generate(cfg(total_examples=100))["train"]  # N not divisible by I: spread evenly
    counts = np.bincount(t.column("instruction_id").to_numpy(), minlength=32)
    assert t.num_rows == 100 and counts.max() - counts.min() <= 1


def test_same_seed_gives_identical_files(tmp_path):
    c = cfg()
    a = write(c, tmp_path / "a")
    b = write(c, tmp_path / "b")
    assert a == b
    for name in rewrite.SPLITS:
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (tmp_path / "b" / f"{name}.parquet").read_bytes()
    other = write(cfg(seed=1), tmp_path / "c")
    assert other["files"]["train"]["sha256"] != a["files"]["train"]["sha256"]


def test_manifest_records_params_rows_and_hashes(tmp_path):
    c = cfg()
    write(c, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["params"] == c.model_dump()
    for name in rewrite.SPLITS:
        entry = manifest["files"][name]
        assert entry["rows"] == pq.read_metadata(tmp_path / entry["path"]).num_rows
        assert entry["sha256"] == datafiles.sha256(tmp_path / entry["path"])
        assert set(rewrite.COLUMNS) <= set(pq.read_schema(tmp_path / entry["path"]).names)


def test_capacity_is_exact_and_enforced():
    c = cfg(alphabet_size=3, pattern_length=2, replacement_length=1)
    assert rewrite.rule_capacity(c) == 9 * 3  # 9 patterns x 3 replacements, no identities at these lengths
    assert rewrite.rule_capacity(cfg(alphabet_size=2, pattern_length=1, replacement_length=1)) == 2
    ok = c.replace(n_instructions=27 - 2 * 3, n_unseen_instructions=3, total_examples=100)
    assert len(rules(rewrite.generate(ok)["train"])) == 21  # the whole space, by enumeration
    with pytest.raises(ConfigError, match="n_instructions"):
        rewrite.generate(ok.replace(n_instructions=22))


@pytest.mark.parametrize("total,parts", [(1000, 10), (1003, 7), (50, 50), (10**6, 1000)])
def test_skew_sampler(total, parts):
    uniform = rewrite.split_counts(total, parts)
    assert uniform.sum() == total and uniform.max() - uniform.min() <= 1
    assert np.array_equal(rewrite.split_counts(total, parts, 1.0), uniform)  # a = 1 is uniform
    previous_top = uniform[0]
    for a in (0.5, 0.2, 0.07, 0.03):  # smaller a: more of the budget on the first instructions
        counts = rewrite.split_counts(total, parts, a)
        assert counts.sum() == total and counts.min() >= 1  # every instruction keeps one example
        assert np.all(np.diff(counts) <= 1)  # non-increasing up to rounding
        assert counts[0] >= previous_top
        previous_top = counts[0]
    assert np.all(np.diff(rewrite.split_counts(total, parts, 2.0)) >= -1)  # a > 1 favours the last ones


def test_skewed_training_set_follows_the_law():
    t = rewrite.generate(cfg(skew=0.1, total_examples=2000))["train"]
    counts = np.bincount(t.column("instruction_id").to_numpy(), minlength=32)
    assert np.array_equal(counts, rewrite.split_counts(2000, 32, 0.1))
    assert counts[0] > 10 * counts[-1] and counts.min() >= 1


def test_seen_rows_follow_the_training_distribution():
    """Seen accuracy judges what the model was trained on: under skew its seen rows are skewed alike (so a
    skewed model is not marked untrained for the rare rules the experiment starves), and uniform otherwise
    (the same rows as before, the unseen rows unchanged)."""
    skewed = rewrite.generate(cfg(skew=0.1, total_examples=2000))
    for split, n in (("test_seen", 64), ("valid_seen", cfg().n_valid_examples)):
        counts = np.bincount(skewed[split].column("instruction_id").to_numpy(), minlength=32)
        assert np.array_equal(counts, rewrite.split_counts(n, 32, 0.1, minimum=0))
        assert counts[0] > 5 * max(counts[-1], 1)
    uniform = rewrite.generate(cfg(total_examples=2000))
    counts = np.bincount(uniform["test_seen"].column("instruction_id").to_numpy(), minlength=32)
    assert counts.max() - counts.min() <= 1
    assert uniform["test_unseen"].equals(rewrite.generate(cfg(skew=1.0, total_examples=2000))["test_unseen"])
