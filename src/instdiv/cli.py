"""`instdiv <command>`: one command per DVC stage, plus helpers for people at a terminal.

generate, train and evaluate work for any task (`--task`, default rewrite) and take their paths from the
command line, which dvc.yaml gives; tasks add their own stages' commands (instdiv/tasks/<name>/).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from instdiv import registry
from instdiv.config import PRESETS_DIR
from instdiv.errors import ConfigError, friendly

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Instruction diversity experiments: generate data, train, evaluate, sweep.")
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Parameter file (params.yaml).")]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="A task under instdiv/tasks (its params section).")]


@app.callback()
def _setup():
    """The package's log lines (not the progress lines) through stdlib logging, to stderr."""
    log = logging.getLogger("instdiv")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _load(params: Path, task: str):
    from instdiv.params import load_params

    return load_params(params), registry.task(task)


@app.command()
@friendly
def generate(params: ParamsOpt = Path("params.yaml"), task: TaskOpt = "rewrite",
             out: Annotated[Path | None, typer.Option(help="Data directory; default data/<task>.")] = None):
    """Generate a task's datasets: Parquet splits and a manifest with their SHA-256 (stage `generate`)."""
    from instdiv.engine import stages

    p, t = _load(params, task)
    out = out or Path("data") / t.name
    manifest = stages.generate(p, t, out)
    rows = ", ".join(f"{k} {v['rows']:,}" for k, v in manifest["files"].items())
    extra = "".join(f" ({k}: {v})" for k, v in manifest.items() if k not in ("task", "params", "files"))
    typer.echo(f"wrote {out}: {rows}{extra}")


@app.command()
@friendly
def train(params: ParamsOpt = Path("params.yaml"), task: TaskOpt = "rewrite",
          data: Annotated[Path | None, typer.Option(help="Data directory; default data/<task>.")] = None,
          model: Annotated[Path | None, typer.Option(help="Model file; default models/<task>.pt.")] = None,
          curves: Annotated[Path | None, typer.Option(help="DVC plot data; default reports/<task>/plots.")] = None):
    """Train a model on a task's data, tracked in MLflow, resumable (stage `train`)."""
    from instdiv.engine import stages

    p, t = _load(params, task)
    model = model or Path("models") / f"{t.name}.pt"
    info = stages.train(p, t, data or Path("data") / t.name, model, curves or Path("reports") / t.name / "plots")
    if info:
        typer.echo(f"trained {info['steps']} steps in {info['fit_seconds']}s; MLflow run {info['run_id']}")


@app.command()
@friendly
def pretrain(name: Annotated[str, typer.Argument(help="A base declared in params.yaml's pretrain.bases.")],
             params: ParamsOpt = Path("params.yaml")):
    """Pretrain a base model on its task's corpus (stage `pretrain@<name>`): data/pretrain/<name>,
    models/base-<name>.pt (start a fine-tuning run from it with model.init), reports/pretrain/<name>/."""
    from instdiv.engine import stages
    from instdiv.params import load_params

    out = stages.pretrain(load_params(params), name)
    corpus = out["manifest"].get("corpus") or {}
    if corpus:
        typer.echo(f"corpus: {corpus.get('train_characters', 0):,} characters in {corpus.get('train_files')} files, "
                   f"SHA-256 {corpus.get('corpus_sha256', '')[:12]}")
    scores = ", ".join(f"{k} {v:.3f}" for k, v in out["metrics"].items()
                       if k.endswith("accuracy") and isinstance(v, float))
    typer.echo(f"wrote {stages.base_path(name)}: {scores}")


@app.command()
@friendly
def evaluate(params: ParamsOpt = Path("params.yaml"), task: TaskOpt = "rewrite",
             data: Annotated[Path | None, typer.Option(help="Data directory; default data/<task>.")] = None,
             model: Annotated[Path | None, typer.Option(help="Model file; default models/<task>.pt.")] = None,
             report: Annotated[Path | None, typer.Option(help="Metrics and predictions; default reports/<task>.")]
             = None):
    """Score a model on the task's test splits; write metrics.json and predictions.csv (stage `evaluate`)."""
    from instdiv.engine import stages

    p, t = _load(params, task)
    data, model = data or Path("data") / t.name, model or Path("models") / f"{t.name}.pt"
    metrics = stages.evaluate(p, t, data, model, report or Path("reports") / t.name,
                              f"instdiv train --task {t.name} --data {data} --model {model} (or dvc repro)")
    typer.echo(t.headline(metrics))
    warning = stages.untrained_warning(p, t, metrics)
    if warning:
        typer.echo(warning, err=True)


@app.command()
@friendly
def sweep(params: ParamsOpt = Path("params.yaml"),
          workers: Annotated[int, typer.Option(help="Worker processes (overrides sweep.workers).")] = 0,
          out: Annotated[Path, typer.Option(help="The trials table.")] = Path("reports/sweep/trials.csv")):
    """Run the Optuna sweep; write its trials table (stage `sweep`). Start it on several machines with one
    PostgreSQL sweep.storage and one MLflow server, and they share the work."""
    from instdiv.engine import sweep as sweeps
    from instdiv.params import load_params

    p = load_params(params)
    if workers:
        p = p.replace(sweep=p.sweep.replace(workers=workers))
    frame = sweeps.run(p, out)
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    typer.echo(f"sweep: {len(frame)} trials ({', '.join(f'{v} {k.lower()}' for k, v in states.items())}); "
               f"wrote {out}")


@app.command()
@friendly
def estimate(params: ParamsOpt = Path("params.yaml"),
             trials: Annotated[Path, typer.Option(help="The sweep's trials.")] = Path("reports/sweep/trials.csv"),
             out: Annotated[Path, typer.Option(help="Points, fit and figures.")] = Path("reports/sweep"),
             threshold: Annotated[Path, typer.Option(help="The estimate.")] = Path("reports/threshold.json"),
             control: Annotated[str | None, typer.Option(
                 help="A control arm drawn beside the study: RUNS.csv[:key=value], e.g. "
                      "reports/holdout/runs.csv:holdout=strings")] = None,
             band: Annotated[str | None, typer.Option(
                 help="The published threshold's range LOW-HIGH, drawn and judged against ours, e.g. 300-500")] = None):
    """Fit the threshold from the sweep's trials; write the estimate and the figures (stage `estimate`)."""
    from instdiv.engine import estimate as estimates
    from instdiv.errors import ConfigError
    from instdiv.params import load_params

    bounds = None
    if band is not None:
        try:
            bounds = tuple(float(v) for v in band.split("-"))
            assert len(bounds) == 2 and 0 < bounds[0] < bounds[1]
        except (ValueError, AssertionError):
            raise ConfigError(f"--band {band}: give LOW-HIGH instruction counts, e.g. --band 300-500") from None
    est = estimates.run(load_params(params), trials, out, threshold, control, bounds)
    typer.echo(estimates.headline(est))
    if est.get("control"):
        typer.echo("control (" + est["control"]["arm"] + "): " + estimates.headline(est["control"]))


@app.command()
@friendly
def experiment(name: str, params: ParamsOpt = Path("params.yaml")):
    """Run one of the paper's experiments (experiments/<name>.yaml); write reports/<name>/ and reports/index.md."""
    from instdiv.engine import experiments

    metrics = experiments.run(name, params)
    typer.echo(f"experiment {name}: {metrics['trials']} training runs; see reports/{name}/figure.png and "
               "reports/index.md")


@app.command()
@friendly
def dashboard(params: ParamsOpt = Path("params.yaml"),
              port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080):
    """Serve optuna-dashboard for the sweep's storage on 127.0.0.1."""
    import subprocess

    from instdiv.engine.sweep import dashboard_arg
    from instdiv.params import load_params

    arg = dashboard_arg(load_params(params))
    typer.echo(f"optuna-dashboard {arg} at http://127.0.0.1:{port}")
    exe = Path(sys.executable).parent / "optuna-dashboard"
    subprocess.run([str(exe), arg, "--host", "127.0.0.1", "--port", str(port)])


@app.command()
@friendly
def preset(name: str, params: ParamsOpt = Path("params.yaml")):
    """Print `-S key=value` arguments of a preset: `dvc exp run $(instdiv preset paper)`."""
    from instdiv.params import load_params, params_from_dict

    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"no preset '{name}'; known presets: {known}")
    overrides = yaml.safe_load(path.read_text())
    load_params(params)
    merged = yaml.safe_load(Path(params).read_text())
    kind = (overrides.get("model") or {}).get("kind")
    if kind is not None and kind != (merged.get("model") or {}).get("kind", "gpt"):
        raise ConfigError(f"preset {name} changes model.kind to {kind}, whose keys differ (dvc exp run -S cannot "
                          f"remove the others'); apply it through an experiment: dvc exp run -S "
                          f"experiments/params.yaml:<name>.scale={name} -S experiments/params.yaml:<name>.weights=DIR "
                          "...")
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    params_from_dict(merged, source=f"{params} + preset {name}")  # fail here, not half-way through a run
    args = [f"-S {s}.{k}={json.dumps(v, separators=(',', ':'))}"
            for s, values in overrides.items() for k, v in values.items()]
    typer.echo(" ".join(args))


for _register in registry.commands():  # the tasks' own stages
    _register(app)


def main():  # pragma: no cover - console entry
    sys.exit(app())
