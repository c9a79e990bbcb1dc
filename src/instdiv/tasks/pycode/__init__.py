"""A corpus every machine has: the Python standard library's source, to pretrain a code base (`instdiv
pretrain code`) that the code study then fine-tunes.

The files are found from the running interpreter (`sysconfig`), never downloaded; the manifest records their
SHA-256 and the Python version, so a base says exactly what it read. Whole files are held out for validation
and test, so the windows scored were never trained on. A training row is a window of `chunk_chars`
characters with an empty prompt (the loss is on all of it); a validation or test row asks the model to write
the last `continuation` characters of a held-out window, scored by exact match.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sysconfig
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

from instdiv.config import Number, Section, positive
from instdiv.engine import data as datafiles
from instdiv.engine.task import Examples, Task
from instdiv.engine.text import ByteTokenizer
from instdiv.errors import ConfigError

SCHEMA = pa.schema([("file", pa.string()), ("prompt", pa.string()), ("text", pa.string())])


class PyCodeConfig(Section):
    section: ClassVar[str] = "pycode"
    n_files: int | None = None  # source files in training (a seeded draw); null: every file not held out
    include_tests: bool = True  # the standard library's own tests (Lib/test and the tests packages): real code too
    chunk_chars: int = 256  # a training window
    continuation: int = 32  # characters the model writes at the end of a held-out window
    held_out: Number = 0.03  # share of the files kept for validation and test
    n_valid: int = 256
    n_test: int = 1024
    seed: int = 0

    def check(self) -> None:
        positive(self, "chunk_chars", "continuation", "n_valid", "n_test")
        if self.n_files is not None:
            positive(self, "n_files")
        if self.continuation >= self.chunk_chars:
            raise ConfigError(f"pycode.continuation={self.continuation} must be shorter than pycode.chunk_chars="
                              f"{self.chunk_chars}")
        if not 0.0 < self.held_out < 0.5:
            raise ConfigError(f"pycode.held_out={self.held_out} must be in (0, 0.5)")


def source_files() -> tuple[Path, list[Path]]:
    """The standard library's directory and its .py files (site-packages left out), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
    if not files:
        raise ConfigError(f"no Python source under {root}: this interpreter ships its standard library compiled "
                          "only; run with one that has its .py files")
    return root, files


def _is_test(rel: Path) -> bool:
    return any(part in ("test", "tests", "idle_test") for part in rel.parts[:-1])


def corpus(cfg: PyCodeConfig) -> tuple[list[tuple[str, str]], str]:
    """(relative path, text) of every file used, and the SHA-256 over their paths and bytes."""
    root, files = source_files()
    out, h = [], hashlib.sha256()
    for path in files:
        rel = path.relative_to(root)
        if not cfg.include_tests and _is_test(rel):
            continue
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # a few test files hold other encodings on purpose
            continue
        h.update(str(rel).encode() + b"\0" + raw)
        out.append((str(rel), text))
    return out, h.hexdigest()


def _windows(files: list[tuple[str, str]], n: int) -> tuple[list[str], list[str]]:
    names, texts = [], []
    for name, text in files:
        for start in range(0, len(text) - n + 1, n):
            names.append(name)
            texts.append(text[start:start + n])
    return names, texts


def generate(cfg: PyCodeConfig) -> dict[str, pa.Table]:
    """The splits; the training table's schema metadata says what corpus it came from (for the manifest)."""
    files, digest = corpus(cfg)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(files))
    n_out = max(2, int(round(cfg.held_out * len(files))))
    held = [files[i] for i in sorted(order[:n_out])]
    train_files = [files[i] for i in sorted(order[n_out:])]
    if cfg.n_files is not None:
        if cfg.n_files > len(train_files):
            raise ConfigError(f"pycode.n_files={cfg.n_files}: only {len(train_files)} files are not held out")
        train_files = [train_files[i] for i in sorted(rng.permutation(len(train_files))[:cfg.n_files])]
    names, texts = _windows(train_files, cfg.chunk_chars)
    tables = {"train": pa.table({"file": names, "prompt": [""] * len(texts), "text": texts}, schema=SCHEMA)}
    names, texts = _windows(held, cfg.chunk_chars)
    pick = rng.permutation(len(texts))
    need = cfg.n_valid + cfg.n_test
    if len(pick) < need:
        raise ConfigError(f"pycode: the held-out files give {len(pick)} windows, fewer than n_valid + n_test = "
                          f"{need}; raise pycode.held_out or lower the counts")
    k = cfg.chunk_chars - cfg.continuation
    for split, rows in (("valid_held_out", pick[:cfg.n_valid]), ("test_held_out", pick[cfg.n_valid:need])):
        rows = sorted(rows)
        tables[split] = pa.table({"file": [names[i] for i in rows], "prompt": [texts[i][:k] for i in rows],
                                  "text": [texts[i][k:] for i in rows]}, schema=SCHEMA)
    about = {"corpus_sha256": digest, "python": platform.python_version(), "files": len(files),
             "train_files": len(train_files), "held_out_files": len(held),
             "train_characters": int(sum(len(t) for _, t in train_files))}
    tables["train"] = tables["train"].replace_schema_metadata({"corpus": json.dumps(about)})
    return tables


class PyCodeTask(Task):
    name = "pycode"
    sections = {"pycode": PyCodeConfig}
    count_axis = "n_files"
    count_label = "standard-library files in training"
    monitor = "held_out_accuracy"
    metrics = ("held_out_accuracy",)
    columns = tuple(SCHEMA.names)

    def generate(self, params) -> dict[str, pa.Table]:
        return generate(params.pycode)

    def write(self, tables, params, out_dir: Path) -> dict:
        about = json.loads((tables["train"].schema.metadata or {}).get(b"corpus", b"{}"))
        return datafiles.write(tables, out_dir, task=self.name, params=params.pycode.model_dump(), corpus=about)

    def tokenizer(self, params):
        return ByteTokenizer()

    def examples(self, table: pa.Table) -> Examples:
        return Examples(table.column("prompt").to_pylist(), table.column("text").to_pylist())


TASK = PyCodeTask()
