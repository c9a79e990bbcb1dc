"""General-domain instruction tasks answered in plain text, to mix into a code-instruction set.

Each task is one function `(rng, n) -> [(instruction, response), ...]` registered in TASKS: the rewrite task
of the paper's first half, arithmetic in words, and word transformations.
"""

from __future__ import annotations

import string
from typing import Callable

import numpy as np

ALPHABET = string.ascii_lowercase


TASKS: dict[str, Callable[[np.random.Generator, int], list[tuple[str, str]]]] = {}
ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def task(fn):
    TASKS[fn.__name__] = fn
    return fn


def number_words(n: int) -> str:
    """0 <= n < 1000 in English words: 47 -> forty-seven, 305 -> three hundred five."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10 - 2] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    rest = n % 100
    return f"{ONES[n // 100]} hundred" + ("" if rest == 0 else " " + number_words(rest))


def _word(rng: np.random.Generator) -> str:
    """A pronounceable made-up word: consonant-vowel syllables."""
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    return "".join(consonants[rng.integers(len(consonants))] + vowels[rng.integers(len(vowels))]
                   for _ in range(int(rng.integers(2, 5))))


@task
def rewrite(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        letters = ALPHABET[:6]
        pattern = "".join(letters[i] for i in rng.integers(0, 6, size=int(rng.integers(1, 4))))
        replacement = "".join(letters[i] for i in rng.integers(0, 6, size=int(rng.integers(1, 4))))
        text = "".join(letters[i] for i in rng.integers(0, 6, size=10))
        out.append((f"Replace the leftmost occurrence of '{pattern}' in '{text}' with '{replacement}', once, and "
                    "give the result.", text.replace(pattern, replacement, 1)))
    return out


@task
def arithmetic(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        op = int(rng.integers(3))
        a, b = (int(v) for v in rng.integers(0, 20, size=2))
        if op == 1 and b > a:
            a, b = b, a
        word, value = [("plus", a + b), ("minus", a - b), ("times", a * b)][op]
        out.append((f"What is {number_words(a)} {word} {number_words(b)}? Answer in words.", number_words(value)))
    return out


@task
def words(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    transforms = [("Reverse the word '{w}'.", lambda w: w[::-1]),
                  ("Write the word '{w}' in capital letters.", str.upper),
                  ("Repeat every letter of '{w}' twice.", lambda w: "".join(c * 2 for c in w)),
                  ("How many letters does '{w}' have? Answer in words.", lambda w: number_words(len(w)))]
    out = []
    for _ in range(n):
        template, fn = transforms[int(rng.integers(len(transforms)))]
        w = _word(rng)
        out.append((template.format(w=w), fn(w)))
    return out
