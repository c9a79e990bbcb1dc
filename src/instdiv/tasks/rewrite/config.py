"""The rewrite task's section of params.yaml."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from instdiv.config import IntOrRange, Number, Section, as_range, check_range, positive
from instdiv.errors import ConfigError
from instdiv.tasks.rewrite.families import FAMILIES


class RewriteConfig(Section):
    """The string-rewrite task: rule x -> y applied to input z, leftmost occurrence, once."""

    section: ClassVar[str] = "rewrite"
    # Added after the first studies: left out of study names while at their defaults (engine/sweep/study.py).
    LATER_KEYS: ClassVar[tuple[str, ...]] = ("families", "family_k", "occurrences", "test_occurrences", "encrypt",
                                             "keys")

    alphabet_size: int = 8
    pattern_length: IntOrRange = 3
    replacement_length: IntOrRange = 3
    input_length: int = 10
    n_instructions: int = 512
    # Exactly one of the two: S examples for every instruction, or a total budget N = I x S split evenly.
    examples_per_instruction: int | None = None
    total_examples: int | None = 50_000
    noop_share: Number = 0.2
    # Exponent a of the power law f(x) = a x^(a-1) over instructions (x in [0, 1]): instruction k of I gets
    # a share ((k+1)/I)^a - (k/I)^a of the examples, at least one. null or 1: uniform; a < 1 concentrates
    # the examples on the first instructions.
    skew: Number | None = None
    # "pairs": unseen rules are new (pattern, replacement) pairs; "patterns": their patterns are no training
    # rule's pattern either; "strings": neither of their strings is a training rule's pattern or replacement
    # (the paper's families experiment). With a small alphabet most strings are soon seen in training.
    holdout: Literal["pairs", "patterns", "strings"] = "pairs"
    n_unseen_instructions: int = 256
    n_test_examples: int = 2_000
    n_valid_examples: int = 512
    seed: int = 0
    # Semantic families (paper Exp. 4; instdiv/tasks/rewrite/families.py): null for unconstrained rules, or the families
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
    # The keys a rule's cipher draws from (uniformly; 0 = a: no shift, the plain task in the encrypted prompt);
    # null: 1 to alphabet_size - 1, every rule's output changed. A base that knows rewriting and the cipher
    # apart is pretrained on rules with key 0 and no-ops with the other keys (params.yaml pretrain.bases).
    keys: list[int] | None = None

    def check(self) -> None:
        s = "rewrite"
        positive(self, "alphabet_size", "input_length", "n_instructions", "n_unseen_instructions",
                  "n_test_examples", "n_valid_examples")
        if self.alphabet_size > 26:
            raise ConfigError(f"{s}.alphabet_size={self.alphabet_size}: strings use lowercase Latin letters; "
                              "set it between 1 and 26")
        for key in ("pattern_length", "replacement_length"):
            lo, hi = check_range(self, key)
            if key == "pattern_length" and hi > self.input_length:
                raise ConfigError(f"{s}.pattern_length={getattr(self, key)} is longer than "
                                  f"{s}.input_length={self.input_length}: the pattern must fit in the input; "
                                  "shorten the pattern or lengthen the input")
        if (self.examples_per_instruction is None) == (self.total_examples is None):
            raise ConfigError(f"{s}: set exactly one of examples_per_instruction (S) and total_examples "
                              "(N = I x S); set the other to null")
        if self.examples_per_instruction is not None:
            positive(self, "examples_per_instruction")
        if self.total_examples is not None:
            positive(self, "total_examples")
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
        if self.keys is not None:
            if not self.encrypt:
                raise ConfigError(f"{s}.keys={self.keys} is set but {s}.encrypt is false; set encrypt: true or "
                                  "keys: null")
            if not self.keys or any(not 0 <= k < self.alphabet_size for k in self.keys):
                raise ConfigError(f"{s}.keys={self.keys}: give one or more shifts from 0 to "
                                  f"alphabet_size - 1 = {self.alphabet_size - 1}, or null")

    def _validate_families(self) -> None:
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
                                  "(a new one is one function in instdiv/tasks/rewrite/families.py)")
        if self.family_k is None:
            raise ConfigError(f"{s}.families is set: give {s}.family_k, the range of k to train on, e.g. [3, 4]")
        lo, hi = check_range(self, "family_k")
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
            check_range(self, "test_occurrences")
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
