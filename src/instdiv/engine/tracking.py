"""Everything MLflow, in one place: where runs are recorded, the Lightning logger, params, datasets, models,
evaluation metrics and files, and a sweep's parent and nested runs.

Databases live at the repository root given by DVC_ROOT, which DVC points at the original repository even
when `dvc exp run --queue/--temp` runs the stages in a temporary copy; so every experiment lands in one
MLflow store and one Optuna study database.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

from instdiv.config import TrackingConfig
from instdiv.errors import ConfigError

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


def check(cfg: TrackingConfig, seconds: float = 3.0) -> None:
    """Fail in seconds, with one line, when the tracking store named in params or the environment cannot be
    used: a server that does not answer (MLflow's own HTTP retries would hang for minutes), a file store
    (MLflow 3 refuses it), or a SQLite file whose folder is missing."""
    import ssl
    import urllib.error
    import urllib.request

    uri = tracking_uri(cfg)
    key = f"tracking.uri={uri}" if cfg.uri else f"MLFLOW_TRACKING_URI={uri}"
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=seconds):
                return
        except urllib.error.HTTPError:
            return  # it answered (a proxy or an older server without /health): MLflow will say more
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                return  # it answered; its certificate is MLflow's business (MLFLOW_TRACKING_INSECURE_TLS ...)
            raise ConfigError(f"{key}: the MLflow server did not answer within {seconds:.0f} s ({reason}); start "
                              "it (mlflow server ...), or unset it to track in the local SQLite store") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ConfigError(f"{key}: the folder {folder} does not exist; create it or fix the URI")
    elif uri.startswith("file:") or ("://" not in uri and ("/" in uri or uri.startswith("."))):
        raise ConfigError(f"{key}: MLflow 3 refuses a file store; use sqlite:///<path>/mlflow.db or a server URL")


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


def client(cfg: TrackingConfig):
    import mlflow

    return mlflow.MlflowClient(tracking_uri(cfg))


def logger(cfg: TrackingConfig, run_name: str | None = None, tags: dict | None = None, run_id: str | None = None,
           experiment: str | None = None, resumed: bool = False):
    """The Lightning logger of a training run: a new run in `experiment` (default tracking.experiment), or the
    run `run_id` (a nested one, or a `resumed` one: then the steps it logged before it was interrupted are
    not logged again, so no step of a metric appears twice)."""
    from lightning.pytorch.loggers import MLFlowLogger

    uri = tracking_uri(cfg)
    if run_id is not None and experiment is None:
        return MLFlowLogger(tracking_uri=uri, run_id=run_id)
    experiment = experiment or cfg.experiment
    kind = MLFlowLogger
    if resumed:
        c = client(cfg)
        logged = {key: max(m.step for m in c.get_metric_history(run_id, key))
                  for key in c.get_run(run_id).data.metrics}

        class ResumedLogger(MLFlowLogger):
            def log_metrics(self, metrics, step=None):
                fresh = {k: v for k, v in metrics.items() if step is None or step > logged.get(k, -1)}
                if fresh:
                    super().log_metrics(fresh, step)

        kind = ResumedLogger
    return kind(experiment_name=experiment, tracking_uri=uri, run_id=run_id, run_name=run_name,
                artifact_location=artifact_location(uri, experiment), tags=tags)


def log_params(run_logger, values: dict) -> None:
    run_logger.log_hyperparams(flatten(values))


def log_datasets(run_id: str, tables: dict, digests: dict[str, str], sources: dict[str, Path], task: str) -> None:
    """The splits as MLflow run inputs, identified by the SHA-256 of their Parquet files (`sources`)."""
    import mlflow

    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's musings on source kinds and integer columns
        for name, table in tables.items():
            ds = mlflow.data.from_pandas(table.to_pandas(), source=str(Path(sources[name]).resolve()),
                                         name=f"{task}/{name}", digest=digests[name][:16])
            mlflow.log_input(ds, context="training" if name == "train" else name)


def log_model(run_id: str, network, weights: Path, family=None) -> None:
    """The weights file, and the model in its family's own form (a pretrained model's adapter or weights with
    its tokenizer, and tags naming its base) or as a pickle-free pt2 export (token ids in, logits out)."""
    import tempfile

    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    if family is not None:
        with tempfile.TemporaryDirectory() as tmp:
            tags = family.export(network, Path(tmp))
            if tags is not None:
                with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                    mlflow.log_artifact(str(weights), "weights")
                    mlflow.log_artifacts(tmp, "model")
                    mlflow.set_tags({f"model.{k}": v for k, v in tags.items()})
                return

    class LogitsOnly(torch.nn.Module):
        """One tensor in, one tensor out: the form MLflow's pt2 export takes."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, idx):
            return self.net(idx)[0]

    t = network.block_size
    example = np.zeros((2, t), dtype=np.int64)
    with torch.no_grad():
        v = network.float().eval()(torch.from_numpy(example))[0].size(-1)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, t))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, t, v))]))
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        mlflow.log_artifact(str(weights), "weights")
        mlflow.pytorch.log_model(LogitsOnly(network), name="model", serialization_format="pt2",
                                 input_example=example, signature=signature,
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


def log_evaluation(cfg: TrackingConfig, run_id: str, metrics: dict, files: list[Path]) -> None:
    """Test metrics (as test/<key>; one level of nesting as test/<key>/<sub>) and files on the training run,
    so one MLflow run tells the whole story."""
    c = client(cfg)
    for key, value in flatten(metrics, "test/").items():
        if isinstance(value, bool):  # a judgement (learned), searchable as a tag
            c.set_tag(run_id, key.replace(".", "/"), str(value).lower())
        elif isinstance(value, (int, float)):
            c.log_metric(run_id, key.replace(".", "/"), value)
    for path in files:
        c.log_artifact(run_id, str(path), "evaluation")


def write_curves(cfg: TrackingConfig, run_id: str, out_dir: Path, val_metrics: list[str]) -> None:
    """DVC plot data from the run's own metric history, so a resumed run still has its whole curve."""
    import pandas as pd

    c = client(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    val = {}
    for key in val_metrics:
        for m in c.get_metric_history(run_id, f"val/{key}"):
            val.setdefault(m.step, {"step": m.step})[key] = m.value
    pd.DataFrame(sorted(val.values(), key=lambda r: r["step"])).to_csv(out_dir / "val_accuracy.csv", index=False)
    loss = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "train/loss"))
    pd.DataFrame(loss, columns=["step", "loss"]).to_csv(out_dir / "train_loss.csv", index=False)


def parent_run(cfg: TrackingConfig, name: str, tags: dict, params: dict) -> str:
    """A sweep's parent run (trials are nested under it); it stays RUNNING until `end_run`."""
    import mlflow

    uri = tracking_uri(cfg)
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    exp_id = exp.experiment_id if exp else c.create_experiment(
        cfg.experiment, artifact_location=artifact_location(uri, cfg.experiment))
    run = c.create_run(exp_id, run_name=name, tags={"git_commit": git_commit(), **tags})
    c.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in flatten(params).items()])
    return run.info.run_id


def run_exists(cfg: TrackingConfig, run_id: str | None) -> bool:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return False
    try:
        client(cfg).get_run(run_id)
    except MlflowException:
        return False
    return True


def child_run(cfg: TrackingConfig, parent: str, name: str, tags: dict) -> str:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    c = client(cfg)
    exp_id = c.get_run(parent).info.experiment_id
    return c.create_run(exp_id, run_name=name, tags={MLFLOW_PARENT_RUN_ID: parent, **tags}).info.run_id


def end_run(cfg: TrackingConfig, run_id: str, status: str = "FINISHED") -> None:
    client(cfg).set_terminated(run_id, status)
