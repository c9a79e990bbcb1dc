"""The generators of the paper's other experiments: semantic families, occurrence variety, encryption."""

from __future__ import annotations

import collections

import pytest

from instdiv.tasks.rewrite import families, generator as rewrite, text as tok
from instdiv.tasks.rewrite.config import RewriteConfig
from instdiv.errors import ConfigError

FAMILY = RewriteConfig(alphabet_size=6, pattern_length=6, replacement_length=6, input_length=12,
                       families=["repeat", "periodic", "mirror"], family_k=[3, 6], n_instructions=60,
                       total_examples=600, n_unseen_instructions=10, n_test_examples=80, n_valid_examples=20)
OCCUR = RewriteConfig(alphabet_size=6, pattern_length=2, replacement_length=2, input_length=20,
                      occurrences=[1, 3, 7], test_occurrences=[1, 7], n_instructions=40, total_examples=800,
                      n_unseen_instructions=10, n_test_examples=200, n_valid_examples=20)
CIPHER = RewriteConfig(alphabet_size=6, pattern_length=2, replacement_length=2, input_length=8, encrypt=True,
                       noop_share=0.4, n_instructions=40, total_examples=800, n_unseen_instructions=10,
                       n_test_examples=100, n_valid_examples=20)


def rows(table):
    return table.to_pylist()


# ------------------------------------------------------------------------------------------ families

def test_family_shapes_by_hand():
    assert families.repeat("abc", 3) == "aaabbbccc"
    assert families.periodic("abc", 2) == "abcabc"
    assert families.mirror("abc", 3) == "abccbaabc"
    assert families.mirror("ab", 4) == "abbaabba"
    for shape in families.FAMILIES.values():
        assert shape("abcd", 1) == "abcd"  # k = 1: unconstrained


def base_of(name: str, member: str, k: int) -> str:
    """Recover the base a member was built from (repeat: every k-th letter; the others: the first piece)."""
    return member[::k] if name == "repeat" else member[: len(member) // k]


def test_family_rules_are_members_with_k_in_range():
    t = rewrite.generate(FAMILY)
    for split in ("train", "valid_seen", "valid_unseen", "test_seen", "test_unseen"):
        for r in rows(t[split]):
            shape = families.FAMILIES[r["family"]]
            assert 3 <= r["k"] <= 6, (split, r)
            for s in (r["pattern"], r["replacement"]):
                base = base_of(r["family"], s, r["k"])
                assert len(base) == 6 // r["k"] and shape(base, r["k"]) == s, (split, r)
    assert set(t["train"].column("family").to_pylist()) == {"repeat", "periodic", "mirror"}
    assert set(t["test_small_k"].column("k").to_pylist()) == {1, 2}  # k < 3, the paper's small-k test
    assert set(t["test_unconstrained"].column("family").to_pylist()) == {"unconstrained"}


def test_family_test_rules_are_disjoint_and_outputs_exact():
    t = rewrite.generate(FAMILY)

    def rules(name):
        return set(zip(t[name].column("pattern").to_pylist(), t[name].column("replacement").to_pylist()))

    held = ["valid_unseen", "test_unseen", "test_small_k", "test_unconstrained"]
    for a in held:
        assert not rules(a) & rules("train"), a
        for b in held:
            assert a == b or not rules(a) & rules(b), (a, b)
    for name in t:
        for r in rows(t[name]):
            assert r["output"] == rewrite.apply_rule(r["pattern"], r["replacement"], r["input"])
            assert r["is_noop"] == (r["pattern"] not in r["input"])


def test_a_new_family_is_one_function():
    @families.family
    def rotate(base: str, k: int) -> str:  # "abc", 3 -> "abcbcacab": the base and its rotations
        return "".join(base[i % len(base):] + base[: i % len(base)] for i in range(k))

    try:
        t = rewrite.generate(FAMILY.replace(families=["rotate"], family_k=[2, 3]))
    finally:
        del families.FAMILIES["rotate"]
    assert set(t["train"].column("family").to_pylist()) == {"rotate"}
    for r in rows(t["train"]):
        assert rotate(r["pattern"][: len(r["pattern"]) // r["k"]], r["k"]) == r["pattern"]


@pytest.mark.parametrize("changes,message", [
    ({"family_k": [3, 7]}, r"family_k=\[3, 7\] does not fit.*L = 6"),
    ({"families": ["repeat", "spiral"]}, "unknown family 'spiral'; known: repeat, periodic, mirror"),
    ({"families": ["repeat", "repeat"]}, "distinct family names"),
    ({"family_k": None}, "give rewrite.family_k"),
    ({"families": None}, "family_k=.* is set but rewrite.families is null"),
    ({"family_k": [4, 3]}, "family_k"),
    ({"family_k": [6, 6], "families": ["repeat"], "n_instructions": 60}, "allow at most 36"),
])
def test_family_settings_fail_early(changes, message):
    with pytest.raises(ConfigError, match=message):
        rewrite.generate(FAMILY.replace(**changes))


# --------------------------------------------------------------------------------------- occurrences

def test_count_occurrences_by_hand():
    assert rewrite.count_occurrences("aa", "aaa") == 2  # overlaps count
    assert rewrite.count_occurrences("ab", "abcabab") == 3
    assert rewrite.count_occurrences("ab", "ba") == 0


def test_inputs_hold_the_pattern_exactly_n_times():
    t = rewrite.generate(OCCUR)
    train = rows(t["train"])
    assert {r["occurrences"] for r in train if not r["is_noop"]} == {1, 3, 7}
    for r in train + rows(t["test_unseen"]):
        assert r["occurrences"] == rewrite.count_occurrences(r["pattern"], r["input"])
        assert r["is_noop"] == (r["occurrences"] == 0)
        assert r["output"] == rewrite.apply_rule(r["pattern"], r["replacement"], r["input"])
        assert len(r["input"]) == 20
    tested = collections.Counter(r["occurrences"] for r in rows(t["test_unseen"]) if not r["is_noop"])
    assert set(tested) == set(range(1, 8))  # tested on every count of test_occurrences
    for split in ("test_seen", "valid_seen"):  # seen rows as trained: the learned gate judges those
        assert {r["occurrences"] for r in rows(t[split]) if not r["is_noop"]} == {1, 3, 7}
    # Replacing the leftmost occurrence only: n - 1 remain (unless the replacement makes new ones).
    first = next(r for r in train if r["occurrences"] == 7 and r["replacement"] not in r["pattern"]
                 and r["pattern"] not in r["replacement"])
    assert first["output"].count(first["replacement"]) >= 1
    assert rewrite.count_occurrences(first["pattern"], first["output"]) <= 6


def test_occurrence_settings_fail_early():
    with pytest.raises(ConfigError, match=r"occurrences=\[1, 8\]: 8 occurrences of a 2-letter pattern.*"
                                          r"input_length >= 23"):
        OCCUR.replace(occurrences=[1, 8], test_occurrences=None)
    with pytest.raises(ConfigError, match=r"test_occurrences=\[1, 9\]"):
        OCCUR.replace(test_occurrences=[1, 9])
    with pytest.raises(ConfigError, match="distinct counts >= 1"):
        OCCUR.replace(occurrences=[0, 2])


# ------------------------------------------------------------------------------------------ encryption

def test_shift_cipher_by_hand():
    assert rewrite.shift("abc", 1, 3) == "bca"  # wraps inside the task's alphabet
    assert rewrite.shift("hello", 3, 26) == "khoor"
    assert rewrite.shift(rewrite.shift("fade", 2, 6), 4, 6) == "fade"  # key + (A - key) = identity


def test_encrypted_outputs_noops_included():
    t = rewrite.generate(CIPHER)
    key_of = {}
    for name in t:
        for r in rows(t[name]):
            assert 1 <= r["key"] < 6
            assert key_of.setdefault(r["instruction_id"], r["key"]) == r["key"]  # the key is part of the rule
            plain = rewrite.apply_rule(r["pattern"], r["replacement"], r["input"])
            assert r["output"] == rewrite.shift(plain, r["key"], 6)
            if r["is_noop"]:
                assert r["output"] != r["input"]  # no-ops are encrypted too
    noop = t["train"].column("is_noop").to_pylist()
    assert sum(noop) == round(0.4 * 800)
    first = rows(t["train"])[0]
    assert tok.prompts(t["train"].slice(0, 1).to_pydict())[0] == \
        f"{first['pattern']}>{first['replacement']}|{'abcdef'[first['key']]}|{first['input']}="
    assert tok.sequence_lengths(CIPHER)[0] == tok.sequence_lengths(CIPHER.replace(encrypt=False))[0] + 2


def test_chosen_keys_and_key_zero_the_plain_task():
    """rewrite.keys: the shifts a rule draws from; 0 leaves the output plain (the encrypted prompt with key a)."""
    plain = rewrite.generate(CIPHER.replace(keys=[0]))
    for r in rows(plain["train"]):
        assert r["key"] == 0 and r["output"] == rewrite.apply_rule(r["pattern"], r["replacement"], r["input"])
    assert tok.prompts(plain["train"].slice(0, 1).to_pydict())[0].split("|")[1] == "a"
    two = {r["key"] for r in rows(rewrite.generate(CIPHER.replace(keys=[2, 5]))["train"])}
    assert two == {2, 5}
    for bad, message in (({"keys": [6]}, "from 0 to alphabet_size - 1 = 5"), ({"keys": []}, "one or more"),
                         ({"keys": [1], "encrypt": False}, "encrypt is false")):
        with pytest.raises(ConfigError, match=message):
            rewrite.generate(CIPHER.replace(**bad))


@pytest.mark.parametrize("cfg", [FAMILY, OCCUR, CIPHER], ids=["families", "occurrences", "encrypt"])
def test_variants_are_deterministic(cfg):
    a, b = rewrite.generate(cfg), rewrite.generate(cfg)
    assert list(a) == list(b) and all(a[k].equals(b[k]) for k in a)
    assert not rewrite.generate(cfg.replace(seed=1))["train"].equals(a["train"])
