"""Dataset files: Parquet splits plus a manifest with their row counts and SHA-256, checked on every read.

A corrupt, edited or stale file stops the stage that reads it with the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from instdiv.errors import DataError


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


def read_manifest(data_dir: Path, stage: str) -> dict:
    path = data_dir / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found; generate the data first: dvc repro {stage}") from None
    except json.JSONDecodeError:
        raise DataError(f"{path} is corrupt; regenerate it: dvc repro -f {stage}") from None


def read(name: str, data_dir: Path, manifest: dict | None, columns, stage: str) -> pa.Table:
    """One split, checked against the manifest's SHA-256 (when given) and for the columns it must have."""
    path = data_dir / f"{name}.parquet"
    if not path.is_file():
        raise DataError(f"{path} not found; generate the data first: dvc repro {stage}")
    if manifest is not None:
        expected = manifest["files"].get(name, {}).get("sha256")
        if expected != sha256(path):
            raise DataError(f"{path} does not match the SHA-256 in {data_dir / 'manifest.json'} (corrupt or "
                            f"edited); regenerate it: dvc repro -f {stage}  (or dvc checkout)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}); regenerate it: "
                        f"dvc repro -f {stage}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path} lacks the columns {missing}; regenerate it: dvc repro -f {stage}")
    return table
