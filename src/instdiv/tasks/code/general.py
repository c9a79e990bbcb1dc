"""General-domain instruction tasks answered in plain text, to mix into a code-instruction set.

Each task is one function `rng -> (instruction, response)` drawing one row, registered in TASKS as
`(rng, n) -> [(instruction, response), ...]`: the rewrite task
of the paper's first half, arithmetic in words, word transformations, sorting, counting, initials,
comparisons, numbers in words, letter shifts, vowel removal, palindromes and list positions: twelve kinds,
since their diversity is the variable the paper varies.
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


def task(row: Callable[[np.random.Generator], tuple[str, str]]):
    """Register a one-row task as `(rng, n) -> n rows`, drawn one after another from `rng`."""
    TASKS[row.__name__] = lambda rng, n: [row(rng) for _ in range(n)]
    return row


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
def rewrite(rng: np.random.Generator) -> tuple[str, str]:
    letters = ALPHABET[:6]
    pattern = "".join(letters[i] for i in rng.integers(0, 6, size=int(rng.integers(1, 4))))
    replacement = "".join(letters[i] for i in rng.integers(0, 6, size=int(rng.integers(1, 4))))
    text = "".join(letters[i] for i in rng.integers(0, 6, size=10))
    return (f"Replace the leftmost occurrence of '{pattern}' in '{text}' with '{replacement}', once, and give "
            "the result.", text.replace(pattern, replacement, 1))


@task
def arithmetic(rng: np.random.Generator) -> tuple[str, str]:
    op = int(rng.integers(3))
    a, b = (int(v) for v in rng.integers(0, 20, size=2))
    if op == 1 and b > a:
        a, b = b, a
    word, value = [("plus", a + b), ("minus", a - b), ("times", a * b)][op]
    return f"What is {number_words(a)} {word} {number_words(b)}? Answer in words.", number_words(value)


@task
def words(rng: np.random.Generator) -> tuple[str, str]:
    transforms = [("Reverse the word '{w}'.", lambda w: w[::-1]),
                  ("Write the word '{w}' in capital letters.", str.upper),
                  ("Repeat every letter of '{w}' twice.", lambda w: "".join(c * 2 for c in w)),
                  ("How many letters does '{w}' have? Answer in words.", lambda w: number_words(len(w)))]
    template, fn = transforms[int(rng.integers(len(transforms)))]
    w = _word(rng)
    return template.format(w=w), fn(w)


@task
def sort_words(rng: np.random.Generator) -> tuple[str, str]:
    ws = [_word(rng) for _ in range(int(rng.integers(3, 6)))]
    return f"Sort these words alphabetically: {', '.join(ws)}.", ", ".join(sorted(ws))


@task
def count_letter(rng: np.random.Generator) -> tuple[str, str]:
    w = "".join(_word(rng) for _ in range(2))
    c = w[int(rng.integers(len(w)))]
    return f"How many times does the letter '{c}' occur in '{w}'? Answer in words.", number_words(w.count(c))


@task
def acronym(rng: np.random.Generator) -> tuple[str, str]:
    ws = [_word(rng) for _ in range(int(rng.integers(2, 6)))]
    return f"Write the initials of '{' '.join(ws)}' in capital letters.", "".join(w[0] for w in ws).upper()


@task
def compare(rng: np.random.Generator) -> tuple[str, str]:
    a, b = (int(v) for v in rng.choice(100, size=2, replace=False))
    which = "larger" if rng.integers(2) else "smaller"
    answer = max(a, b) if which == "larger" else min(a, b)
    return f"Which is {which}, {number_words(a)} or {number_words(b)}?", number_words(answer)


@task
def digits_to_words(rng: np.random.Generator) -> tuple[str, str]:
    v = int(rng.integers(0, 1000))
    return f"Write the number {v} in words.", number_words(v)


@task
def next_letters(rng: np.random.Generator) -> tuple[str, str]:
    w = _word(rng)
    return (f"Replace every letter of '{w}' by the next letter of the alphabet (z becomes a).",
            "".join(ALPHABET[(ALPHABET.index(c) + 1) % 26] for c in w))


@task
def remove_vowels(rng: np.random.Generator) -> tuple[str, str]:
    w = "".join(_word(rng) for _ in range(2))
    return f"Remove the vowels from '{w}'.", "".join(c for c in w if c not in "aeiou")


@task
def yes_no_palindrome(rng: np.random.Generator) -> tuple[str, str]:
    w = _word(rng)
    if rng.integers(2):
        w = w + w[::-1][int(rng.integers(0, 2)):]  # a palindrome, odd or even length
    return f"Is '{w}' the same read backwards? Answer yes or no.", "yes" if w == w[::-1] else "no"


@task
def list_position(rng: np.random.Generator) -> tuple[str, str]:
    ws = [_word(rng) for _ in range(int(rng.integers(3, 7)))]
    k = int(rng.integers(len(ws)))
    ordinal = ["first", "second", "third", "fourth", "fifth", "sixth"][k]
    return f"What is the {ordinal} word in: {' '.join(ws)}?", ws[k]
