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


def experiment_id(cfg: TrackingConfig, name: str) -> str:
    """The id of the MLflow experiment `name`, created when missing. Two processes starting at once (a
    two-worker `dvc queue start -j 2`, sweep workers) may both find it missing: the second one's create then
    fails on the name's unique constraint, and the experiment the first made is the answer."""
    from mlflow.exceptions import MlflowException

    c = client(cfg)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location(tracking_uri(cfg), name))
    except MlflowException:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


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
    experiment_id(cfg, experiment)  # the logger would create it too, without surviving the race
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


def log_datasets(cfg: TrackingConfig, run_id: str, tables: dict, digests: dict[str, str], sources: dict[str, Path],
                 task: str) -> None:
    """The splits as MLflow run inputs, identified by the SHA-256 of their Parquet files (`sources`)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's musings on source kinds and integer columns
        for name, table in tables.items():
            ds = mlflow.data.from_pandas(table.to_pandas(), source=str(Path(sources[name]).resolve()),
                                         name=f"{task}/{name}", digest=digests[name][:16])
            mlflow.log_input(ds, context="training" if name == "train" else name)


def log_model(cfg: TrackingConfig, run_id: str, weights: Path, params, task: str, network=None,
              family=None) -> str:
    """The model as MLflow users load it: a text-in, text-out pyfunc (engine/serving.py; a model from code,
    no pickle) holding the weights file and the settings it was trained with, the package beside it; and,
    where the family has one, its own form too (a pretrained model's adapter or weights with its tokenizer,
    tags naming its base). Returns the LoggedModel's id, to which evaluation metrics are linked."""
    import json
    import tempfile

    import mlflow
    import torch

    package = Path(__file__).resolve().parents[1]
    mlflow.set_tracking_uri(tracking_uri(cfg))
    with tempfile.TemporaryDirectory() as tmp, \
            mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's notes on inferring requirements
        meta = Path(tmp) / "meta.json"
        meta.write_text(json.dumps({"task": task, "params": params.dump()}, indent=2))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(package / "engine" / "pyfunc_model.py"),
            artifacts={"weights": str(weights), "meta": str(meta)}, code_paths=[str(package)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                              "pyyaml", "pydantic", "pyarrow", "pandas", "lightning", "torchmetrics"])
        if family is not None and network is not None:
            tags = family.export(network, Path(tmp) / "export")
            if tags is not None:
                mlflow.log_artifacts(str(Path(tmp) / "export"), "hf_model")
                mlflow.set_tags({f"model.{k}": v for k, v in tags.items()})
    return info.model_id


def register(cfg: TrackingConfig, model_id: str, task: str) -> tuple[str, str] | None:
    """Register the logged model under tracking.registered_model (its {task} filled in) and point the alias
    `champion` at this version: the default pipeline's latest model, loadable by name as
    models:/<name>@champion. Returns (name, version), or None where tracking.registered_model is null."""

    if not cfg.registered_model:
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name = cfg.registered_model.format(task=task)
    uri = tracking_uri(cfg)
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)  # the registry of this store, whatever is global
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="The default pipeline's model (dvc repro); alias champion: "
                                                    "the latest. Text in, text out (instdiv/engine/serving.py).")
    logged = c.get_logged_model(model_id)
    version = c.create_model_version(name, source=logged.model_uri, run_id=logged.source_run_id, model_id=model_id)
    c.set_registered_model_alias(name, "champion", version.version)
    return name, str(version.version)


def system_metrics(cfg: TrackingConfig, run_id: str):
    """MLflow's monitor of CPU, memory, disk, network and (with nvidia-ml-py) GPU use, logged to the run as
    system/* every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL) while training runs; a context manager."""
    import contextlib

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    @contextlib.contextmanager
    def monitoring():
        import logging

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its start/stop lines
        from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL

        every = MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() or 10  # MLflow's own variable sets it
        monitor = SystemMetricsMonitor(run_id, sampling_interval=every, samples_before_logging=1,
                                       resume_logging=True, tracking_uri=tracking_uri(cfg))
        monitor.start()
        try:
            yield monitor
        finally:
            monitor.finish()
            # the samples since the last publication (all of them for a run shorter than the interval):
            # MLflow's loop drops them when it stops
            last = monitor.aggregate_metrics()
            if last:
                monitor.publish_metrics(last)
                monitor.mlflow_logger.flush()

    return monitoring()


def log_evaluation(cfg: TrackingConfig, run_id: str, metrics: dict, files: list[Path],
                   model_id: str | None = None) -> None:
    """Test metrics (as test/<key>; one level of nesting as test/<key>/<sub>) and files on the training run,
    so one MLflow run tells the whole story; the metrics are linked to the logged model `model_id` too (its
    page in the MLflow UI lists them)."""
    c = client(cfg)
    for key, value in flatten(metrics, "test/").items():
        if isinstance(value, bool):  # a judgement (learned), searchable as a tag
            c.set_tag(run_id, key.replace(".", "/"), str(value).lower())
        elif isinstance(value, (int, float)):
            c.log_metric(run_id, key.replace(".", "/"), value, model_id=model_id)
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

    c = client(cfg)
    run = c.create_run(experiment_id(cfg, cfg.experiment), run_name=name, tags={"git_commit": git_commit(), **tags})
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
