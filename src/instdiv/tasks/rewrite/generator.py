"""The string-rewrite task (one step of a Markov algorithm) and its dataset generator.

An example is a rule x -> y (the instruction) and an input z; the output is z with the leftmost occurrence
of x replaced by y, once; if x does not occur in z the output is z (a "no-op"). Training uses I distinct
rules; the unseen test and validation rules never occur in training (nor their patterns under
`holdout: patterns`).

Variants of the paper's other experiments, each off by default (the default data does not change):
- families: patterns and replacements drawn from semantic families shaped by k (instdiv/tasks/rewrite/families.py), with
  extra test splits on smaller k (`test_small_k`) and on unconstrained rules (`test_unconstrained`);
- occurrences: op inputs holding the pattern exactly n times (counted at every position, overlaps included);
- encrypt: the output, no-ops included, is then letter-shifted by the rule's key (see `shift`).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pyarrow as pa

from instdiv.config import as_range
from instdiv.engine.data import split_counts
from instdiv.errors import ConfigError
from instdiv.tasks.rewrite.config import RewriteConfig
from instdiv.tasks.rewrite.families import FAMILIES

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
SPLITS = ("train", "valid_seen", "valid_unseen", "test_seen", "test_unseen")
COLUMNS = ("instruction_id", "pattern", "replacement", "input", "output", "is_noop")
SCHEMA = pa.schema([
    ("instruction_id", pa.int32()),
    ("pattern", pa.string()),
    ("replacement", pa.string()),
    ("input", pa.string()),
    ("output", pa.string()),
    ("is_noop", pa.bool_()),
])
# Below this many possible rules the generator enumerates them all instead of rejection sampling, so a
# request close to the capacity still finishes quickly.
_ENUMERATE_LIMIT = 4_000_000

Rule = tuple[str, str]


def apply_rule(pattern: str, replacement: str, text: str) -> str:
    """Replace the leftmost occurrence of `pattern` in `text` by `replacement`, once."""
    return text.replace(pattern, replacement, 1)


@functools.lru_cache(maxsize=None)
def _shift_table(key: int, alphabet_size: int) -> dict:
    letters = ALPHABET[:alphabet_size]
    return str.maketrans(letters, letters[key:] + letters[:key])


def shift(text: str, key: int, alphabet_size: int) -> str:
    """The letter-shift (Caesar) cipher of encrypted rewriting, over the task's alphabet of the first
    `alphabet_size` letters: letter number i (a = 0) becomes letter (i + key) mod alphabet_size."""
    return text.translate(_shift_table(key % alphabet_size, alphabet_size))


def count_occurrences(pattern: str, text: str) -> int:
    """How many positions of `text` start an occurrence of `pattern` (overlapping ones included)."""
    return sum(text.startswith(pattern, i) for i in range(len(text) - len(pattern) + 1))


def rule_capacity(cfg: RewriteConfig) -> int:
    """How many distinct non-identity rules the alphabet and lengths allow."""
    a = cfg.alphabet_size
    plo, phi = as_range(cfg.pattern_length)
    rlo, rhi = as_range(cfg.replacement_length)
    return sum(a ** pl * a ** rl - (a ** pl if pl == rl else 0)
               for pl in range(plo, phi + 1) for rl in range(rlo, rhi + 1))


def pattern_capacity(cfg: RewriteConfig) -> int:
    plo, phi = as_range(cfg.pattern_length)
    return sum(cfg.alphabet_size ** pl for pl in range(plo, phi + 1))


def family_capacity(cfg: RewriteConfig, k_range: tuple[int, int]) -> int:
    """An upper bound on the distinct family rules with k in `k_range` (members of different families or
    k may coincide, so the true number can be lower)."""
    def members(spec):
        lo, hi = as_range(spec)
        return sum(cfg.alphabet_size ** (length // k) for length in range(lo, hi + 1)
                   for k in range(k_range[0], k_range[1] + 1))

    n = len(cfg.families)
    return n * members(cfg.pattern_length) * n * members(cfg.replacement_length)


def small_k(cfg: RewriteConfig) -> tuple[int, int] | None:
    """The k of the small-k test split: every k below the training range (none when it starts at 1)."""
    lo = as_range(cfg.family_k)[0]
    return (1, lo - 1) if lo > 1 else None


def check_feasible(cfg: RewriteConfig) -> None:
    """Fail before any work when the lengths and alphabet cannot hold the rules requested."""
    needed = cfg.n_instructions + 2 * cfg.n_unseen_instructions
    if cfg.families is not None:
        bound = family_capacity(cfg, as_range(cfg.family_k))
        if needed > bound:
            raise ConfigError(
                f"rewrite: {needed} distinct rules requested ({cfg.n_instructions} training + 2 x "
                f"{cfg.n_unseen_instructions} unseen), but families={cfg.families} with family_k="
                f"{cfg.family_k} allow at most {bound} with alphabet_size={cfg.alphabet_size} and these lengths; "
                "lower the counts, widen family_k toward small k, or enlarge the alphabet or the lengths")
        return
    capacity = rule_capacity(cfg)
    if needed > capacity:
        raise ConfigError(
            f"rewrite: {cfg.n_instructions} training + 2 x {cfg.n_unseen_instructions} unseen (test and "
            f"validation) = {needed} distinct rules requested, but alphabet_size={cfg.alphabet_size}, "
            f"pattern_length={cfg.pattern_length}, replacement_length={cfg.replacement_length} allow only "
            f"{capacity}; lower rewrite.n_instructions or rewrite.n_unseen_instructions, or enlarge the "
            "alphabet or the lengths")
    held = {"pairs": 0, "patterns": 2, "strings": 4}[cfg.holdout] * cfg.n_unseen_instructions
    if held and held >= pattern_capacity(cfg):
        raise ConfigError(
            f"rewrite.holdout={cfg.holdout} holds out {held} strings of 2 x {cfg.n_unseen_instructions} unseen "
            f"rules, but only {pattern_capacity(cfg)} patterns exist; lower rewrite.n_unseen_instructions, "
            "use holdout: pairs, or lengthen rewrite.pattern_length")


# ---------------------------------------------------------------------------------------------- rules

def _strings(rng: np.random.Generator, n: int, lengths: np.ndarray, alphabet_size: int) -> list[str]:
    """n random strings over the first `alphabet_size` letters with the given lengths."""
    width = int(lengths.max()) if n else 0
    codes = rng.integers(0, alphabet_size, size=(n, width), dtype=np.uint8) + ord("a")
    flat = codes.tobytes().decode("ascii")
    return [flat[i * width: i * width + length] for i, length in enumerate(lengths.tolist())]


def _lengths(rng: np.random.Generator, n: int, spec) -> np.ndarray:
    lo, hi = as_range(spec)
    return rng.integers(lo, hi + 1, size=n)


def _all_rules(cfg: RewriteConfig) -> list[Rule]:
    letters = ALPHABET[: cfg.alphabet_size]

    def words(spec):
        lo, hi = as_range(spec)
        return ["".join(w) for n in range(lo, hi + 1) for w in itertools.product(letters, repeat=n)]

    reps = words(cfg.replacement_length)
    return [(p, r) for p in words(cfg.pattern_length) for r in reps if p != r]


def _collect(n: int, draw, taken: set[Rule], banned_patterns: frozenset[str],
             banned_replacements: frozenset[str] = frozenset()) -> list[tuple]:
    """Up to n new rows (pattern, replacement, ...) from `draw(batch)`, by rejection: no identity rule, none
    in `taken`, no banned pattern or replacement. Stops early when 50 batches in a row bring nothing new."""
    rows: list[tuple] = []
    stalls = 0
    while len(rows) < n and stalls < 50:
        before = len(rows)
        for row in draw(2 * (n - len(rows)) + 16):
            rule = row[:2]
            if rule[0] != rule[1] and rule not in taken and rule[0] not in banned_patterns \
                    and rule[1] not in banned_replacements:
                rows.append(row)
                taken.add(rule)
                if len(rows) == n:
                    return rows
        stalls = stalls + 1 if len(rows) == before else 0
    return rows


def _too_few(found: int, n: int, what: str = "rules") -> ConfigError:
    return ConfigError(f"rewrite: found only {found} of {n} distinct {what} outside the held-out ones; "
                       "lower rewrite.n_instructions or rewrite.n_unseen_instructions, or enlarge the "
                       "alphabet or the lengths")


def sample_rules(rng: np.random.Generator, n: int, cfg: RewriteConfig, taken: set[Rule],
                 banned_patterns: frozenset[str] = frozenset(),
                 banned_replacements: frozenset[str] = frozenset()) -> list[Rule]:
    """n distinct rules, none in `taken` nor using a banned pattern or replacement; adds them to `taken`."""
    capacity = rule_capacity(cfg)
    rules: list[Rule] = []
    if capacity <= _ENUMERATE_LIMIT and 4 * (n + len(taken)) > capacity:
        pool = _all_rules(cfg)
        for i in rng.permutation(len(pool)).tolist():
            rule = pool[i]
            if rule not in taken and rule[0] not in banned_patterns and rule[1] not in banned_replacements:
                rules.append(rule)
                taken.add(rule)
                if len(rules) == n:
                    return rules
    else:
        def draw(batch):
            pats = _strings(rng, batch, _lengths(rng, batch, cfg.pattern_length), cfg.alphabet_size)
            reps = _strings(rng, batch, _lengths(rng, batch, cfg.replacement_length), cfg.alphabet_size)
            return zip(pats, reps)

        rules = _collect(n, draw, taken, banned_patterns, banned_replacements)
        if len(rules) == n:
            return rules
    raise _too_few(len(rules), n)


def sample_family_rules(rng: np.random.Generator, n: int, cfg: RewriteConfig, k_range: tuple[int, int],
                        taken: set[Rule], banned_patterns: frozenset[str] = frozenset(),
                        banned_replacements: frozenset[str] = frozenset()) -> list[tuple]:
    """n distinct rules (pattern, replacement, family, k): a family of `cfg.families` and k in `k_range` per
    rule, pattern and replacement both members of that family with that k."""
    names = cfg.families

    def draw(batch):
        fam = rng.integers(0, len(names), size=batch)
        k = rng.integers(k_range[0], k_range[1] + 1, size=batch)
        pats = _strings(rng, batch, _lengths(rng, batch, cfg.pattern_length) // k, cfg.alphabet_size)
        reps = _strings(rng, batch, _lengths(rng, batch, cfg.replacement_length) // k, cfg.alphabet_size)
        for f, kk, p, r in zip(fam.tolist(), k.tolist(), pats, reps):
            shape = FAMILIES[names[f]]
            yield shape(p, kk), shape(r, kk), names[f], kk

    rows = _collect(n, draw, taken, banned_patterns, banned_replacements)
    if len(rows) < n:
        raise _too_few(len(rows), n, f"rules of the families {names} with k in {list(k_range)}")
    return rows


# ------------------------------------------------------------------------------------------- examples

def _inputs(rng: np.random.Generator, patterns: list[str], noop: np.ndarray, cfg: RewriteConfig,
            occurrences: list[int] | None = None) -> list[str]:
    """Random inputs: no-op rows never hold the pattern; op rows hold it at a random place (maybe more than
    once by chance) or, given `occurrences`, exactly n times with n drawn from that list."""
    n, length = len(patterns), cfg.input_length
    texts = _strings(rng, n, np.full(n, length), cfg.alphabet_size)
    op = np.flatnonzero(~noop).tolist()
    if occurrences is None:
        starts = rng.integers(0, 1 << 30, size=n).tolist()
        for i in op:
            p = patterns[i]
            at = starts[i] % (length - len(p) + 1)
            texts[i] = texts[i][:at] + p + texts[i][at + len(p):]
    else:
        _place_exactly(rng, texts, patterns, op, np.asarray(occurrences)[rng.integers(0, len(occurrences),
                                                                                      size=len(op))], cfg)
    redo = [i for i in np.flatnonzero(noop).tolist() if patterns[i] in texts[i]]
    for _ in range(200):
        if not redo:
            return texts
        fresh = _strings(rng, len(redo), np.full(len(redo), length), cfg.alphabet_size)
        for i, text in zip(redo, fresh):
            texts[i] = text
        redo = [i for i in redo if patterns[i] in texts[i]]
    raise ConfigError(f"rewrite: cannot draw inputs of length {cfg.input_length} that avoid the patterns "
                      f"(alphabet_size={cfg.alphabet_size}); lower rewrite.noop_share or enlarge the alphabet")


def _place_exactly(rng: np.random.Generator, texts: list[str], patterns: list[str], rows: list[int],
                   counts: np.ndarray, cfg: RewriteConfig) -> None:
    """Rewrite texts[i] for i in rows to hold patterns[i] exactly counts[j] times: the copies at random
    places with at least one random letter between them; redrawn where the letters make another occurrence."""
    todo = list(zip(rows, counts.tolist()))
    for _ in range(200):
        if not todo:
            return
        m, most = len(todo), max(c for _, c in todo)
        fills = _strings(rng, m, np.full(m, cfg.input_length), cfg.alphabet_size)
        cuts = rng.integers(0, 1 << 30, size=(m, most))
        again = []
        for j, (i, c) in enumerate(todo):
            p = patterns[i]
            spare = cfg.input_length - c * len(p) - (c - 1)  # letters beyond the one between each pair
            # at[k]: filler letters before copy k; +k keeps one letter between neighbouring copies
            at = [x + k for k, x in enumerate(sorted(x % (spare + 1) for x in cuts[j, :c].tolist()))]
            fill, pieces, prev = fills[j], [], 0
            for a in at:
                pieces += [fill[prev:a], p]
                prev = a
            text = "".join(pieces) + fill[prev:cfg.input_length - c * len(p)]
            if count_occurrences(p, text) == c:
                texts[i] = text
            else:
                again.append((i, c))
        todo = again
    raise ConfigError(f"rewrite: cannot draw inputs of length {cfg.input_length} holding a pattern exactly "
                      f"{todo[0][1]} times (alphabet_size={cfg.alphabet_size}); lengthen rewrite.input_length or "
                      "lower rewrite.occurrences / rewrite.test_occurrences")


EXTRA_COLUMNS = {"family": pa.string(), "k": pa.int16(), "key": pa.int8(), "occurrences": pa.int16()}


def make_examples(rng: np.random.Generator, rules: list[Rule], ids: np.ndarray, counts: np.ndarray,
                  cfg: RewriteConfig, avoid: set[tuple[int, str]] | None = None, columns: dict | None = None,
                  occurrences: list[int] | None = None) -> pa.Table:
    """counts[k] examples of rule k, an exact `noop_share` of them no-ops, shuffled.

    `avoid` holds (instruction_id, input) pairs that must not recur, so seen-rule test inputs are new.
    `columns` holds more values per rule (family, k, the cipher key); with a key the outputs are encrypted.
    """
    which = np.repeat(np.arange(len(rules)), counts)
    n = len(which)
    which = which[rng.permutation(n)]
    noop = np.zeros(n, dtype=bool)
    noop[rng.permutation(n)[: round(cfg.noop_share * n)]] = True
    order = which.tolist()
    patterns = [rules[k][0] for k in order]
    replacements = [rules[k][1] for k in order]
    row_ids = ids[which]
    texts = _inputs(rng, patterns, noop, cfg, occurrences)
    if avoid:
        for _ in range(200):
            clash = [i for i in range(n) if (int(row_ids[i]), texts[i]) in avoid]
            if not clash:
                break
            fresh = _inputs(rng, [patterns[i] for i in clash], noop[clash], cfg, occurrences)
            for i, text in zip(clash, fresh):
                texts[i] = text
        else:
            raise ConfigError("rewrite: too few distinct inputs per rule for new test inputs; lengthen "
                              "rewrite.input_length or lower rewrite.n_test_examples")
    outputs = [t.replace(p, r, 1) for t, p, r in zip(texts, patterns, replacements)]
    extra = {name: [values[k] for k in order] for name, values in (columns or {}).items()}
    if "key" in extra:
        outputs = [shift(o, key, cfg.alphabet_size) for o, key in zip(outputs, extra["key"])]
    if occurrences is not None:
        extra["occurrences"] = [count_occurrences(p, t) for p, t in zip(patterns, texts)]
    table = pa.table([pa.array(row_ids, pa.int32()), patterns, replacements, texts, outputs, noop], schema=SCHEMA)
    for name, values in extra.items():
        table = table.append_column(pa.field(name, EXTRA_COLUMNS[name]), pa.array(values, EXTRA_COLUMNS[name]))
    return table


def effective_instructions(counts: np.ndarray) -> float:
    """exp(entropy) of the examples' distribution over instructions: I when uniform, 1 when one rule has all."""
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def instructions_holding(counts: np.ndarray, share: float = 0.99) -> int:
    """How many of the most frequent instructions hold `share` of the examples."""
    ordered = np.sort(counts)[::-1]
    return int(np.searchsorted(np.cumsum(ordered), share * ordered.sum()) + 1)


def held_out(holdout: str, rules: list[Rule]) -> tuple[frozenset[str], frozenset[str]]:
    """The patterns and replacements other rules may not use, given `rules` to keep apart: none (pairs),
    their patterns as patterns (patterns), or both their strings in either role (strings)."""
    if holdout == "patterns":
        return frozenset(p for p, _ in rules), frozenset()
    if holdout == "strings":
        both = frozenset(s for rule in rules for s in rule)
        return both, both
    return frozenset(), frozenset()


def generate(cfg: RewriteConfig) -> dict[str, pa.Table]:
    """All splits for a config; the same config gives the same tables."""
    check_feasible(cfg)
    rng = np.random.default_rng(cfg.seed)
    taken: set[Rule] = set()
    u = cfg.n_unseen_instructions
    train_k = as_range(cfg.family_k) if cfg.families is not None else None

    def draw_rules(n, k_range, banned=(frozenset(), frozenset())) -> tuple[list[Rule], dict]:
        """n rules (family members when k_range is given) and their extra columns."""
        columns = {}
        if k_range is not None:
            rows = sample_family_rules(rng, n, cfg, k_range, taken, *banned)
            rules = [row[:2] for row in rows]
            columns = {"family": [row[2] for row in rows], "k": [row[3] for row in rows]}
        else:
            rules = sample_rules(rng, n, cfg, taken, *banned)
            if cfg.families is not None:
                columns = {"family": ["unconstrained"] * n, "k": [1] * n}
        if cfg.encrypt and cfg.keys is not None:
            columns["key"] = rng.choice(cfg.keys, size=n).tolist()
        elif cfg.encrypt:
            columns["key"] = rng.integers(1, cfg.alphabet_size, size=n).tolist()
        return rules, columns

    # Unseen rules first, so that under holdout=patterns the training rules can avoid their patterns.
    test_unseen_rules = draw_rules(u, train_k)
    valid_unseen_rules = draw_rules(u, train_k)
    train_rules = draw_rules(cfg.n_instructions, train_k,
                             held_out(cfg.holdout, test_unseen_rules[0] + valid_unseen_rules[0]))

    i = cfg.n_instructions
    train_ids = np.arange(i)
    test_ids, valid_ids = np.arange(i, i + u), np.arange(i + u, i + 2 * u)
    if cfg.examples_per_instruction is not None:
        train_counts = split_counts(i * cfg.examples_per_instruction, i, cfg.skew)
    else:
        train_counts = split_counts(cfg.total_examples, i, cfg.skew)
    tested = cfg.occurrences
    if cfg.test_occurrences is not None:
        lo, hi = as_range(cfg.test_occurrences)
        tested = list(range(lo, hi + 1))

    def examples(rules, ids, n, avoid=None, occurrences=tested):
        counts = split_counts(n, len(ids), minimum=0) if np.isscalar(n) else n
        return make_examples(rng, rules[0], ids, counts, cfg, avoid, rules[1], occurrences)

    train = examples(train_rules, train_ids, train_counts, occurrences=cfg.occurrences)
    seen_inputs = set(zip(train.column("instruction_id").to_pylist(), train.column("input").to_pylist()))
    tables = {"train": train}
    # Seen rows follow the training distribution, over the rules and in the pattern's occurrences: "learned
    # what it was trained on" is judged where the training mass is. Under a strong skew most rules have one
    # example each, and a model trained on one occurrence never saw seven: counting those would mark models
    # untrained for the very effect the skew and occurrences experiments measure (on unseen rows).
    def seen(n):
        return split_counts(n, i, cfg.skew, minimum=0)

    tables["valid_seen"] = examples(train_rules, train_ids, seen(cfg.n_valid_examples), seen_inputs,
                                    occurrences=cfg.occurrences)
    tables["valid_unseen"] = examples(valid_unseen_rules, valid_ids, cfg.n_valid_examples)
    tables["test_seen"] = examples(train_rules, train_ids, seen(cfg.n_test_examples), seen_inputs,
                                   occurrences=cfg.occurrences)
    tables["test_unseen"] = examples(test_unseen_rules, test_ids, cfg.n_test_examples)
    if cfg.families is not None:
        # Further unseen rules: the same families at k below the training range, and unconstrained rules.
        trained = held_out(cfg.holdout, train_rules[0])
        extra = {"test_small_k": small_k(cfg), "test_unconstrained": None}
        for name, k_range in extra.items():
            if name == "test_small_k" and k_range is None:
                continue
            first = i + 2 * u + u * (len(tables) - 5)
            tables[name] = examples(draw_rules(u, k_range, trained), np.arange(first, first + u),
                                    cfg.n_test_examples)
    return tables
