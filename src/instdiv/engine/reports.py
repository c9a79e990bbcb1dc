"""Report files: `metrics.json` holds numbers only (what `dvc metrics show/diff` and `dvc exp show` compare),
`report.json` beside it everything a report says (findings with their verdicts, points, tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def numbers(d: dict) -> dict:
    """The numeric leaves of `d` (booleans included, NaN as null), nested dicts kept; strings and lists left out."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            inner = numbers(value)
            if inner:
                out[key] = inner
        elif isinstance(value, (bool, int)) or value is None:
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else None
    return out


def write(out_dir: Path, metrics: dict, report: dict | None = None) -> None:
    """metrics.json with the numbers of `metrics`, and report.json with `report` (default: `metrics` whole)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(numbers(metrics), indent=2) + "\n")
    full = metrics if report is None else report
    (out_dir / "report.json").write_text(json.dumps(_json_safe(full), indent=2) + "\n")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def read(out_dir: Path) -> dict:
    """A report written by `write` (report.json)."""
    return json.loads((out_dir / "report.json").read_text())
