"""Synthetic code-instruction tasks: an English instruction for a small program over a list of integers, and
the Python source of that program, with hidden tests.

A program is a composition of primitives (map, filter, order, slice, then optionally one reduction), each
with a constant where it takes one and several phrasings. Its *structure* (the primitives' names in order)
is what "distinct programs" counts: the examples of one program vary its constants, phrasings and test
inputs. Test programs are structures never seen in training. Every target is executed at generation time
(it is this module's own code, so in process) to compute the expected outputs of its hidden tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from instdiv.config import as_range
from instdiv.engine import data as datafiles
from instdiv.errors import ConfigError
from instdiv.tasks.code.config import CodeConfig

DATA_DIR = Path("data/code")
ENTRY_POINT = "solve"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Primitive:
    name: str
    line: str  # one statement over the list `xs`, with {c} for the constant
    phrasings: tuple[str, ...]  # with {c}
    constants: tuple[int, ...] = ()  # the values {c} may take; empty: no constant
    reduces: bool = False  # ends the program with `return <expression>` instead of a new xs


def _map(name, expr, phrasings, constants=()):
    return Primitive(name, f"xs = [{expr} for x in xs]", phrasings, constants)


def _filter(name, cond, phrasings, constants=()):
    return Primitive(name, f"xs = [x for x in xs if {cond}]", phrasings, constants)


SMALL = tuple(range(2, 10))
PRIMITIVES: dict[str, Primitive] = {p.name: p for p in [
    _map("add", "x + {c}", ("add {c} to every number", "increase each element by {c}",
                            "shift all values up by {c}"), SMALL),
    _map("subtract", "x - {c}", ("subtract {c} from every number", "decrease each element by {c}",
                                 "lower all values by {c}"), SMALL),
    _map("multiply", "x * {c}", ("multiply every number by {c}", "scale each element by {c}",
                                 "make each value {c} times larger"), SMALL),
    _map("square", "x * x", ("square every number", "replace each element by its square",
                             "raise each value to the power of two")),
    _map("negate", "-x", ("negate every number", "flip the sign of each element", "replace each value by its opposite")),
    _map("modulo", "x % {c}", ("take every number modulo {c}", "replace each element by its remainder mod {c}",
                               "reduce each value modulo {c}"), SMALL),
    _filter("keep_even", "x % 2 == 0", ("keep only the even numbers", "drop the odd elements",
                                        "filter out every odd value")),
    _filter("keep_odd", "x % 2 != 0", ("keep only the odd numbers", "drop the even elements",
                                       "filter out every even value")),
    _filter("keep_above", "x > {c}", ("keep the numbers greater than {c}", "drop every element not above {c}",
                                      "retain only values larger than {c}"), SMALL),
    _filter("keep_below", "x < {c}", ("keep the numbers smaller than {c}", "drop every element not below {c}",
                                      "retain only values less than {c}"), SMALL),
    _filter("keep_positive", "x > 0", ("keep only the positive numbers", "drop zero and the negatives",
                                       "retain the values above zero")),
    Primitive("sort", "xs = sorted(xs)", ("sort the list in ascending order", "order the elements from smallest "
                                          "to largest", "arrange the values in increasing order")),
    Primitive("sort_desc", "xs = sorted(xs, reverse=True)", ("sort the list in descending order", "order the "
              "elements from largest to smallest", "arrange the values in decreasing order")),
    Primitive("reverse", "xs = xs[::-1]", ("reverse the list", "put the elements in the opposite order",
                                           "flip the order of the values")),
    Primitive("take", "xs = xs[:{c}]", ("keep the first {c} elements", "truncate the list to its first {c} items",
                                        "retain only the leading {c} values"), (1, 2, 3, 4, 5)),
    Primitive("drop", "xs = xs[{c}:]", ("drop the first {c} elements", "remove the leading {c} items",
                                        "skip the first {c} values"), (1, 2, 3)),
    Primitive("sum", "return sum(xs)", ("return their sum", "return the total of the remaining numbers",
                                        "return what the elements add up to"), reduces=True),
    Primitive("count", "return len(xs)", ("return how many there are", "return the number of remaining elements",
                                          "return the length of the list"), reduces=True),
    Primitive("max", "return max(xs, default=0)", ("return the largest (0 for an empty list)", "return the maximum "
              "value, or 0 if none is left", "return the biggest element (0 when empty)"), reduces=True),
    Primitive("min", "return min(xs, default=0)", ("return the smallest (0 for an empty list)", "return the minimum "
              "value, or 0 if none is left", "return the least element (0 when empty)"), reduces=True),
]}
STEPS = tuple(name for name, p in PRIMITIVES.items() if not p.reduces)
REDUCTIONS = tuple(name for name, p in PRIMITIVES.items() if p.reduces)
SCHEMA = pa.schema([("program_id", pa.int32()), ("structure", pa.string()), ("instruction", pa.string()),
                    ("target", pa.string()), ("test", pa.string()), ("entry_point", pa.string()),
                    ("depth", pa.int8())])

Structure = tuple[str, ...]


def structure_capacity(cfg: CodeConfig) -> int:
    """How many distinct structures the depth range allows: steps^d, each with or without a reduction."""
    lo, hi = as_range(cfg.depth)
    return sum(len(STEPS) ** d * (len(REDUCTIONS) + 1) for d in range(lo, hi + 1))


def check_feasible(cfg: CodeConfig) -> None:
    needed = cfg.n_programs + 2 * cfg.n_test_programs
    if needed > structure_capacity(cfg):
        raise ConfigError(f"code: {cfg.n_programs} training + 2 x {cfg.n_test_programs} held-out programs = "
                          f"{needed} distinct structures, but depth={cfg.depth} allows "
                          f"{structure_capacity(cfg)}; lower code.n_programs or code.n_test_programs, or "
                          "raise the depth")


def sample_structures(rng: np.random.Generator, n: int, cfg: CodeConfig, taken: set[Structure]) -> list[Structure]:
    lo, hi = as_range(cfg.depth)
    out: list[Structure] = []
    while len(out) < n:
        depth = int(rng.integers(lo, hi + 1))
        steps = tuple(STEPS[i] for i in rng.integers(0, len(STEPS), size=depth))
        reduction = int(rng.integers(0, len(REDUCTIONS) + 1))
        structure = steps + ((REDUCTIONS[reduction],) if reduction < len(REDUCTIONS) else ())
        if structure not in taken:
            taken.add(structure)
            out.append(structure)
    return out


def instruction_and_target(rng: np.random.Generator, structure: Structure) -> tuple[str, str]:
    """One phrasing of the structure with fresh constants, and its Python source."""
    phrases, lines = [], []
    for name in structure:
        p = PRIMITIVES[name]
        c = int(p.constants[rng.integers(0, len(p.constants))]) if p.constants else None
        phrases.append(p.phrasings[rng.integers(0, len(p.phrasings))].format(c=c))
        lines.append(p.line.format(c=c))
    if not PRIMITIVES[structure[-1]].reduces:
        phrases.append("return the resulting list")
        lines.append("return xs")
    steps = ", then ".join(phrases[:-1])
    instruction = f"Write a Python function {ENTRY_POINT}(xs) for a list of integers xs: {steps}, and {phrases[-1]}."
    target = f"def {ENTRY_POINT}(xs):\n" + "".join(f"    {line}\n" for line in lines)
    return instruction, target


def hidden_test(rng: np.random.Generator, target: str, n: int) -> str:
    """Asserts on n random inputs, the expected values computed by running the target (our own code)."""
    namespace: dict = {}
    exec(target, namespace)  # noqa: S102 - generated by this module from PRIMITIVES, not by a model
    solve = namespace[ENTRY_POINT]
    asserts = []
    for _ in range(n):
        xs = rng.integers(-20, 21, size=int(rng.integers(0, 9))).tolist()
        asserts.append(f"assert {ENTRY_POINT}({xs!r}) == {solve(list(xs))!r}")
    return "\n".join(asserts) + "\n"


def make_examples(rng: np.random.Generator, structures: list[Structure], first_id: int, per_program: int,
                  cfg: CodeConfig) -> pa.Table:
    rows = []
    for k, structure in enumerate(structures):
        for _ in range(per_program):
            instruction, target = instruction_and_target(rng, structure)
            rows.append({"program_id": first_id + k, "structure": "|".join(structure), "instruction": instruction,
                         "target": target, "test": hidden_test(rng, target, cfg.tests_per_program),
                         "entry_point": ENTRY_POINT, "depth": sum(not PRIMITIVES[s].reduces for s in structure)})
    order = rng.permutation(len(rows))
    return pa.Table.from_pylist([rows[i] for i in order.tolist()], schema=SCHEMA)


def generate(cfg: CodeConfig) -> dict[str, pa.Table]:
    """train (n_programs structures x examples_per_program), valid and test (held-out structures)."""
    check_feasible(cfg)
    rng = np.random.default_rng(cfg.seed)
    taken: set[Structure] = set()
    t = cfg.n_test_programs
    # The held-out splits are drawn before anything that depends on the training knobs, so every
    # n_programs x examples_per_program (a sweep over them) is scored on the very same test rows.
    test = make_examples(rng, sample_structures(rng, t, cfg, taken), 0, 1, cfg)
    valid = make_examples(rng, sample_structures(rng, t, cfg, taken), t, 1, cfg)
    train = sample_structures(rng, cfg.n_programs, cfg, taken)
    return {"train": make_examples(rng, train, 2 * t, cfg.examples_per_program, cfg), "valid": valid, "test": test}


def write(tables: dict[str, pa.Table], cfg: CodeConfig, out_dir: Path = DATA_DIR) -> dict:
    return datafiles.write(tables, out_dir, task="code", params=cfg.model_dump(),
                           structures=structure_capacity(cfg))


def pairs(table: pa.Table) -> list[tuple[str, str]]:
    """(instruction, target) rows: what a mix takes from a split."""
    return list(zip(table.column("instruction").to_pylist(), table.column("target").to_pylist()))


def read_split(name: str, data_dir: Path = DATA_DIR) -> pa.Table:
    rebuild = "dvc repro code_data"
    return datafiles.read(name, data_dir, datafiles.read_manifest(data_dir, rebuild), SCHEMA.names, rebuild)
