"""Semantic families of rule strings (paper Exp. 4), each shaped by an integer k.

A family turns a random base string and k into a member of the family:

    repeat   ("abc", 3) -> "aaabbbccc"   every character k times
    periodic ("abc", 2) -> "abcabc"      the base k times
    mirror   ("abc", 3) -> "abccbaabc"   the base and its reverse alternating, k pieces

k = 1 gives the base itself in every family: an unconstrained string. The generator asks for strings of
about length L: the base has L // k characters, so a member has (L // k) * k <= L.

Adding a family is one decorated function here; `rewrite.families` can then name it.
"""

from __future__ import annotations

from typing import Callable

FAMILIES: dict[str, Callable[[str, int], str]] = {}


def family(shape: Callable[[str, int], str]) -> Callable[[str, int], str]:
    FAMILIES[shape.__name__] = shape
    return shape


@family
def repeat(base: str, k: int) -> str:
    return "".join(c * k for c in base)


@family
def periodic(base: str, k: int) -> str:
    return base * k


@family
def mirror(base: str, k: int) -> str:
    return "".join(base if i % 2 == 0 else base[::-1] for i in range(k))
