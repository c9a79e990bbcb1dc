"""Where runs are recorded: MLflow's tracking URI and the repository root that shared stores live under.

Databases live at the repository root given by DVC_ROOT, which DVC points at the original repository even
when `dvc exp run --queue/--temp` runs the stages in a temporary copy; so every experiment lands in one
MLflow store and one Optuna study database.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from instdiv.config import TrackingConfig

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(cfg: TrackingConfig) -> str:
    """params' tracking.uri, else $MLFLOW_TRACKING_URI, else SQLite in <root>/mlruns (never the file store)."""
    if cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    db = repo_root() / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts beside a local SQLite store under mlruns/; a tracking server decides its own."""
    if uri.startswith("sqlite:///"):
        return (repo_root() / "mlruns" / "artifacts" / experiment).as_uri()
    return None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=repo_root())
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested params as dotted keys, the form `dvc params diff` and MLflow's run table show."""
    flat = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
