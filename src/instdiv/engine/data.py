"""Dataset files: Parquet splits plus a manifest with their row counts and SHA-256, checked on every read.

A corrupt, edited or stale file stops the stage that reads it with the command that rebuilds it (`rebuild`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from instdiv.errors import ConfigError, DataError


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write(tables: dict[str, pa.Table], out_dir: Path, **about) -> dict:
    """Write each table as <name>.parquet and manifest.json: `about` (task, params, ...) and the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, table in tables.items():
        path = out_dir / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        files[name] = {"path": path.name, "rows": table.num_rows, "sha256": sha256(path)}
    manifest = {"task": about.pop("task"), "params": about.pop("params"), "files": files, **about}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(data_dir: Path, rebuild: str) -> dict:
    path = data_dir / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found; generate the data first: {rebuild}") from None
    except json.JSONDecodeError:
        raise DataError(f"{path} is corrupt; regenerate it: {rebuild}") from None


def read(name: str, data_dir: Path, manifest: dict | None, columns, rebuild: str) -> pa.Table:
    """One split, checked against the manifest's SHA-256 (when given) and for the columns it must have."""
    path = data_dir / f"{name}.parquet"
    if not path.is_file():
        raise DataError(f"{path} not found; generate the data first: {rebuild}")
    if manifest is not None:
        expected = manifest["files"].get(name, {}).get("sha256")
        if expected != sha256(path):
            raise DataError(f"{path} does not match the SHA-256 in {data_dir / 'manifest.json'} (corrupt or "
                            f"edited); regenerate it: {rebuild}  (or dvc checkout)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}); regenerate it: "
                        f"{rebuild}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path} lacks the columns {missing}; regenerate it: {rebuild}")
    return table


def split_counts(total: int, parts: int, skew: float | None = None, minimum: int = 1) -> np.ndarray:
    """`total` spread over `parts` by the power law f(x) = a x^(a-1) (uniform when a is None or 1).

    Every part first gets `minimum` examples (training keeps each instruction at least once); part k then
    gets the share ((k+1)/parts)^a - (k/parts)^a of the rest, rounded by largest remainders so that the
    counts sum to `total` exactly. Ties go to the first parts.
    """
    if total < parts * minimum:
        raise ConfigError(f"{total} examples cannot give each of {parts} instructions {minimum}")
    a = 1.0 if skew is None else skew
    share = np.diff((np.arange(parts + 1) / parts) ** a) * (total - parts * minimum)
    counts = np.floor(share).astype(np.int64)
    left = total - parts * minimum - int(counts.sum())
    counts[np.argsort(-(share - counts), kind="stable")[:left]] += 1
    return counts + minimum
