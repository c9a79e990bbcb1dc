"""A code-instruction training set of fixed size with an exact share of general-domain instructions.

At a budget T and a share of p percent the set holds round(p T / 100) general rows and the rest code rows, each row marked with
its source. Code rows are taken in one fixed random order, so a larger share replaces code rows by general
ones rather than drawing a different code set: mixes at one budget differ only in what g changes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from instdiv.engine.data import split_counts
from instdiv.errors import ConfigError
from instdiv.tasks.code import general, loaders, programs
from instdiv.tasks.code.config import MixConfig

DATA_DIR = Path("data/mix")
SCHEMA = pa.schema([("instruction", pa.string()), ("response", pa.string()), ("source", pa.string())])


def general_rows(cfg: MixConfig, n: int) -> list[tuple[str, str, str]]:
    """n general-domain rows: from mix.general_source, or spread evenly over mix.general_tasks."""
    rng = np.random.default_rng([cfg.seed, 1])
    if cfg.general_source is not None:
        pairs = loaders.load_instructions(cfg.general_source)
        if len(pairs) < n:
            raise ConfigError(f"mix: {n} general-domain rows needed but {cfg.general_source} has {len(pairs)}; "
                              "lower mix.total_examples or mix.general_percents")
        return [(*pairs[i], cfg.general_source) for i in rng.permutation(len(pairs))[:n].tolist()]
    rows = []
    for name, count in zip(cfg.general_tasks, split_counts(n, len(cfg.general_tasks), minimum=0).tolist()):
        rows += [(q, a, name) for q, a in general.TASKS[name](rng, count)]
    return rows


def counts(cfg: MixConfig, percent: int) -> tuple[int, int]:
    """(general rows, code rows) at a share of `percent`: round(percent x total / 100) general, code the rest."""
    n_general = round(percent * cfg.total_examples / 100)
    return n_general, cfg.total_examples - n_general


def build(cfg: MixConfig, percent: int, code_pairs: list[tuple[str, str]], code_source: str = "code") -> pa.Table:
    """The training table: exactly round(percent x total_examples / 100) general rows, code rows for the rest."""
    if not 0 <= percent <= 100:
        raise ConfigError(f"mix: {percent} is not a percent of general-domain rows; use 0 to 100")
    n_general, n_code = counts(cfg, percent)
    if len(code_pairs) < n_code:
        raise ConfigError(f"mix: {n_code} code rows needed (mix.total_examples={cfg.total_examples}, "
                          f"{percent}% general) but the code set has {len(code_pairs)}; lower "
                          "mix.total_examples or raise code.n_programs x code.examples_per_program")
    order = np.random.default_rng([cfg.seed, 0]).permutation(len(code_pairs))[:n_code]
    rows = [(*code_pairs[i], code_source) for i in order.tolist()] + general_rows(cfg, n_general)
    shuffled = np.random.default_rng([cfg.seed, 2]).permutation(len(rows))
    columns = list(zip(*[rows[i] for i in shuffled.tolist()])) or [[], [], []]
    return pa.table([pa.array(list(c), pa.string()) for c in columns], schema=SCHEMA)


def code_pairs(cfg: MixConfig) -> tuple[list[tuple[str, str]], str]:
    """The code rows to draw from: mix.code_source, or the synthetic code tasks' training split."""
    if cfg.code_source is not None:
        return loaders.load_instructions(cfg.code_source), cfg.code_source
    return programs.pairs(programs.read_split("train")), "code"


def run(cfg: MixConfig, percent: int, out_dir: Path = DATA_DIR) -> dict:
    """The `mix@<percent>` stage: data/mix/general-<percent>.parquet and a JSON count of rows per source."""
    if percent not in cfg.general_percents:
        raise ConfigError(f"mix: {percent} is not in mix.general_percents={cfg.general_percents}; add it there")
    pairs, source = code_pairs(cfg)
    table = build(cfg, percent, pairs, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / f"general-{percent}.parquet", compression="zstd")
    counts = {"general_percent": percent, "rows": table.num_rows,
              "sources": dict(sorted(Counter(table.column("source").to_pylist()).items()))}
    (out_dir / f"general-{percent}.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts
