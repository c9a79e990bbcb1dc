"""The task-generic stages: generate a task's data, train a model on it, score the model on its test splits.

Each is one CLI command (`instdiv generate|train|evaluate --task NAME`), and the paths come from the command
line, so dvc.yaml is the one place that names them. A task's own stages reuse `train_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from instdiv import registry
from instdiv.engine import model as models
from instdiv.engine import tracking
from instdiv.engine.training import (check_compile, check_device, choose_precision, device, fingerprint, fit,
                                     fit_data, global_rank, world_size)
from instdiv.errors import ConfigError


def check_infrastructure(params, training: bool = True) -> None:
    """The tracking store, the device and the model's files params name, checked in seconds before any data
    is read or built."""
    tracking.check(params.tracking)
    registry.family(params.model.kind).check(params.model)
    if training:
        check_device(params.train)
        check_compile(params.train)


def generate(params, task, out_dir: Path) -> dict:
    task.check(params)
    return task.write(task.generate(params), params, out_dir)


def tokenizer(params, task):
    return registry.family(params.model.kind).tokenizer(params.model, task.tokenizer(params))


def train(params, task, data_dir: Path, model_path: Path, curves_dir: Path | None, register: bool = True) -> dict:
    """Train on the task's data in `data_dir`; write the model, its info and the training curves; with
    `register`, register it as the task's champion (tracking.registered_model)."""
    check_infrastructure(params)
    tables, manifest = task.read(data_dir)
    digests = {k: v["sha256"] for k, v in manifest["files"].items()}
    tags = {k: str(v) for k, v in manifest.items() if k not in ("task", "params", "files")}
    count = getattr(getattr(params, task.name), task.count_axis)
    sources = {name: data_dir / f"{name}.parquet" for name in tables}
    info = train_model(params, task, tables, digests, sources, model_path, curves_dir,
                       run_name=f"{task.name}-I{count}-seed{params.train.seed}", tags=tags)
    registered = tracking.register(params.tracking, info["model_id"], task.name) if info and register else None
    if registered:  # the stage's model, by name: models:/<name>@champion
        info["registered_model"], info["registered_version"] = registered
        model_path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def train_model(params, task, tables: dict[str, pa.Table], digests: dict[str, str], sources: dict[str, Path],
                model_path: Path, curves_dir: Path | None, run_name: str, tags: dict | None = None,
                experiment: str | None = None, extra_params: dict | None = None) -> dict:
    """Train one model, tracked in MLflow; resume an interrupted run with the same settings and data.

    A finished run rerun (dvc repro -f) trains afresh in a new MLflow run. Writes `model_path`, its info
    (`model_path` with .json: the run id and what happened) and, given `curves_dir`, the DVC plot data.
    """
    tok = tokenizer(params, task)
    data = fit_data(task, tok, params, tables)
    family = registry.family(params.model.kind)
    fp = fingerprint(params, digests["train"])
    ckpt_dir = Path(params.train.checkpoint_dir) / fp
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_file = ckpt_dir / "run.json"
    state = json.loads(run_file.read_text()) if run_file.is_file() else {}
    resume = (ckpt_dir / "last.ckpt").is_file() and "run_id" in state and not state.get("finished", False)
    if not resume and global_rank() == 0:
        # A fresh run never keeps an earlier run's checkpoints: DDP ranks started later read this folder and
        # must come to the same decision (no last.ckpt: no resume).
        for old in ckpt_dir.glob("*.ckpt"):
            old.unlink()

    if global_rank() != 0:  # another DDP rank: it trains, and rank 0 alone records and writes
        fit(params, task, tok, data, False, ckpt_dir, resume, verbose=False)
        return {}
    run_logger = tracking.logger(params.tracking, run_name=run_name, run_id=state["run_id"] if resume else None,
                                 experiment=experiment or params.tracking.experiment, resumed=resume,
                                 tags={"git_commit": tracking.git_commit(), "task": task.name, "fingerprint": fp,
                                       **(tags or {}), **{f"data.{k}.sha256": v for k, v in digests.items()}})
    run_id = run_logger.run_id
    run_file.write_text(json.dumps({"run_id": run_id, "finished": False}) + "\n")
    if not resume:
        total = params.train.total_steps(len(data.train), world_size(params.train))
        tracking.log_params(run_logger, {**params.dump(), **(extra_params or {}), "train.total_steps": total,
                                         "train.precision_used": choose_precision(params.train, family, params.model)})
        tracking.log_datasets(params.tracking, run_id, tables, digests, sources, task.name)

    with tracking.system_metrics(params.tracking, run_id):
        network, _, info = fit(params, task, tok, data, run_logger, ckpt_dir, resume)
    if network is None:
        return {}
    run_file.write_text(json.dumps({"run_id": run_id, "finished": True}) + "\n")
    models.save(model_path, family, network, prompt_width=data.width)
    model_id = tracking.log_model(params.tracking, run_id, model_path, params, task.name, network, family)
    info = {"run_id": run_id, "model_id": model_id,
            "tracking_uri_kind": tracking.tracking_uri(params.tracking).split(":")[0], "fingerprint": fp, **info}
    model_path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    if curves_dir is not None:
        tracking.write_curves(params.tracking, run_id, curves_dir, data.val_metrics())
    return info


def evaluate(params, task, data_dir: Path, model_path: Path, report_dir: Path, stage: str) -> dict:
    """Score the model on the task's test splits; write metrics.json and predictions.csv to `report_dir` and
    add both to the model's MLflow run."""
    check_infrastructure(params, training=False)
    tables, manifest = task.read(data_dir, tests_only=True)
    dev = device()
    network, extras = models.load(model_path, dev, stage)
    metrics, samples = task.score(network, tokenizer(params, task), tables, params, extras["prompt_width"], dev,
                                  params.evaluate.n_samples)
    metrics = judged(params, task, metrics, manifest.get("overlap", {}))
    record_evaluation(params, model_path, metrics, samples, report_dir / "metrics.json",
                      report_dir / "predictions.csv")
    return metrics


def judged(params, task, metrics: dict, overlap: dict) -> dict:
    """The scores with what a reader needs to trust them: whether the model learned its training instructions
    (`learned`, when the task judges it) and how much of the unseen data occurs in training (`overlap`)."""
    out = {**metrics, **overlap}
    learned = task.learned(metrics, params.evaluate.learned_at)
    if learned is not None:
        out["learned"] = learned
    return out


def untrained_warning(params, task, metrics: dict) -> str | None:
    """One line for a run that did not learn its training instructions, or None."""
    if metrics.get("learned", True):
        return None
    low = ", ".join(f"{m} {metrics[m]:.3f}" for m in task.learned_metrics
                    if metrics.get(m) is not None and metrics[m] < params.evaluate.learned_at)
    return (f"UNTRAINED: {low} < evaluate.learned_at={params.evaluate.learned_at}: the model did not learn its "
            "training instructions, so this run says nothing about generalization (raise train.max_steps)")


def record_evaluation(params, model_path: Path, metrics: dict, samples, metrics_path: Path,
                      samples_path: Path) -> None:
    """Write the metrics and the sample predictions, and add both to the model's MLflow run (its info file
    beside the model names the run)."""
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    samples.to_csv(samples_path, index=False)
    info = model_path.with_suffix(".json")
    if info.is_file():
        run = json.loads(info.read_text())
        tracking.log_evaluation(params.tracking, run["run_id"], metrics, [metrics_path, samples_path],
                                run.get("model_id"))


# ------------------------------------------------------------------------------------------ pretraining

PRETRAIN_DATA, BASES_DIR, PRETRAIN_REPORTS = Path("data/pretrain"), Path("models"), Path("reports/pretrain")


def base_path(name: str) -> Path:
    return BASES_DIR / f"base-{name}.pt"


def base_params(params, name: str):
    """The settings a base is pretrained with: params.yaml's, changed by pretrain.bases.<name>.params, tracked
    in the MLflow experiment <tracking.experiment>-pretrain, from random weights."""
    bases = params.pretrain.bases
    if name not in bases:
        raise ConfigError(f"pretrain.bases has no base '{name}'; known: {', '.join(bases) or 'none'} (declare it "
                          "in params.yaml)")
    base = bases[name]
    raw = params.dump()
    raw["model"] = {k: v for k, v in raw["model"].items() if k != "init"}  # a base starts from random weights
    raw["tracking"] = {**raw["tracking"], "experiment": f"{params.tracking.experiment}-pretrain"}
    p = _changed(raw, base.params, f"pretrain.bases.{name}.params")
    return p, registry.task(base.task, f"pretrain.bases.{name}.task")


def _changed(raw: dict, changes: dict[str, dict], where: str):
    """Params from `raw` (a params dump) with some sections' keys changed, validated; errors name `where`."""
    from instdiv.params import params_from_dict

    raw = dict(raw)
    for section, keys in changes.items():
        if section not in raw or section == "pretrain":
            raise ConfigError(f"{where}: '{section}' is not a section a base can change")
        raw[section] = {**raw[section], **keys}
    try:
        return params_from_dict(raw, source=where)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def corpus(params, task, name: str) -> dict[str, pa.Table]:
    """A base's corpus: its task's data at the base's settings (`params`, from base_params), or, when the base
    declares parts, the union of each part's data split by split (the loader shuffles the training rows)."""
    parts = params.pretrain.bases[name].parts
    if not parts:
        return task.generate(params)
    settings = {part: _changed(params.dump(), changes, f"pretrain.bases.{name}.parts.{part}")
                for part, changes in parts.items()}
    for p in settings.values():  # every part checked before any is generated
        task.check(p)
    tables: dict[str, list[pa.Table]] = {}
    for part, p in settings.items():
        generated = task.generate(p)
        if tables and set(generated) != set(tables):
            raise ConfigError(f"pretrain.bases.{name}.parts.{part} gives the splits {sorted(generated)}, the "
                              f"others {sorted(tables)}: parts must differ in sizes and settings, not in splits")
        for split, table in generated.items():
            tables.setdefault(split, []).append(table)
    try:
        return {split: pa.concat_tables(ts, promote_options="default") for split, ts in tables.items()}
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConfigError(f"pretrain.bases.{name}.parts: their tables do not combine ({exc}); make the parts "
                          "differ only in settings that keep the same columns") from None


def pretrain(params, name: str) -> dict:
    """The `pretrain@<name>` stage: the base's corpus (data/pretrain/<name>), the base trained on it
    (models/base-<name>.pt, resumable, in MLflow) and its scores on held-out text
    (reports/pretrain/<name>/)."""
    p, task = base_params(params, name)
    check_infrastructure(p)
    task.check(p)
    data_dir, model_path = PRETRAIN_DATA / name, base_path(name)
    manifest = task.write(corpus(p, task, name), p, data_dir)
    # not registered: models:/instdiv-<task>@champion is the default pipeline's model, and a base (the rewrite
    # one reads encrypted prompts) taking its alias would answer that name's users with another task's format
    info = train(p, task, data_dir, model_path, None, register=False)
    metrics = evaluate(p, task, data_dir, model_path, PRETRAIN_REPORTS / name, f"instdiv pretrain {name}")
    from instdiv.engine import reports

    reports.gather(PRETRAIN_REPORTS.parent)  # reports/experiments.json, what dvc metrics show lists
    return {"manifest": manifest, "info": info, "metrics": metrics}
