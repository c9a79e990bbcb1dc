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
    (out_dir / "report.json").write_text(json.dumps(json_safe(full), indent=2) + "\n")


def json_safe(value):
    """JSON without NaN (DVC and other readers reject it): an undetermined number is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def gather(reports_dir: Path = Path("reports")) -> None:
    """reports/experiments.json: the numbers of every report written so far (each experiment's metrics.json,
    the code study's, the pretrained bases'), the one metrics file experiments/dvc.yaml declares, so that
    `dvc metrics show` lists what has run and has no file missing for what has not. (The default
    pipeline's reports/metrics.json and reports/sweep/metrics.json are declared by dvc.yaml itself.)"""
    found = {p.parent.name: p for p in sorted(reports_dir.glob("*/metrics.json")) if p.parent.name != "sweep"}
    found.update({f"pretrain_{p.parent.name}": p for p in sorted(reports_dir.glob("pretrain/*/metrics.json"))})
    table = {name: json.loads(path.read_text()) for name, path in found.items()}
    (reports_dir / "experiments.json").write_text(json.dumps(table, indent=2) + "\n")


def read(out_dir: Path) -> dict:
    """A report written by `write` (report.json)."""
    return json.loads((out_dir / "report.json").read_text())
