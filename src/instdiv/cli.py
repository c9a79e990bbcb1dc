"""`instdiv <command>`: one command per DVC stage, plus helpers for people at a terminal."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from instdiv.config import PRESETS_DIR
from instdiv.errors import InstdivError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Instruction diversity experiments: generate data, train, evaluate.")
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Parameter file (params.yaml).")]


def friendly(fn):
    """User errors print one line naming the parameter or file and the fix, and exit 2: no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InstdivError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@friendly
def generate(params: ParamsOpt = Path("params.yaml")):
    """Generate the rewrite datasets under data/rewrite/ (stage `generate`)."""
    from instdiv import rewrite
    from instdiv.config import load_params

    cfg = load_params(params).rewrite
    tables = rewrite.generate(cfg)
    manifest = rewrite.write(tables, cfg)
    rows = ", ".join(f"{k} {v['rows']:,}" for k, v in manifest["files"].items())
    typer.echo(f"wrote {rewrite.DATA_DIR}: {rows} (holdout: {cfg.holdout})")


@app.command()
@friendly
def train(params: ParamsOpt = Path("params.yaml")):
    """Train the model on data/rewrite/, tracked in MLflow (stage `train`)."""
    from instdiv.config import load_params
    from instdiv.train import train as run_training

    info = run_training(load_params(params))
    if info:
        typer.echo(f"trained {info['steps']} steps in {info['fit_seconds']}s; MLflow run {info['run_id']}")


@app.command()
@friendly
def evaluate(params: ParamsOpt = Path("params.yaml")):
    """Score seen and unseen instructions; write reports/metrics.json (stage `evaluate`)."""
    from instdiv.config import load_params
    from instdiv.evaluate import evaluate as run_evaluation, headline
    from instdiv.tracking import tracking_uri

    p = load_params(params)
    metrics = run_evaluation(p.rewrite, p.evaluate, tracking_uri(p.tracking))
    typer.echo(headline(metrics))


@app.command()
@friendly
def sweep(params: ParamsOpt = Path("params.yaml"),
          workers: Annotated[int, typer.Option(help="Worker processes (overrides sweep.workers).")] = 0):
    """Run the Optuna sweep; write reports/sweep/trials.csv (stage `sweep`). Start it on several machines
    with one PostgreSQL sweep.storage and one MLflow server, and they share the work."""
    import dataclasses

    from instdiv import sweep as sweeps
    from instdiv.config import load_params

    path = params
    if workers:
        p = load_params(params)
        p = dataclasses.replace(p, sweep=dataclasses.replace(p.sweep, workers=workers))
        p.sweep.validate()
        path = _write_params(p)
    frame = sweeps.run(path)
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    typer.echo(f"sweep: {len(frame)} trials ({', '.join(f'{v} {k.lower()}' for k, v in states.items())}); "
               f"wrote {sweeps.TRIALS_PATH}")


@app.command()
@friendly
def estimate(params: ParamsOpt = Path("params.yaml")):
    """Fit the threshold from the sweep's trials; write reports/threshold.json and figures (stage `estimate`)."""
    from instdiv import estimate as estimates
    from instdiv.config import load_params
    from instdiv.sweep import TRIALS_PATH

    est = estimates.run(load_params(params).sweep, TRIALS_PATH)
    typer.echo(estimates.headline(est))


@app.command("code-data")
@friendly
def code_data(params: ParamsOpt = Path("params.yaml")):
    """Generate the synthetic code tasks under data/code/ (stage `code_data`)."""
    from instdiv import codetasks
    from instdiv.config import load_params

    cfg = load_params(params).code
    manifest = codetasks.write(codetasks.generate(cfg), cfg)
    typer.echo(", ".join(f"{name}: {f['rows']:,} rows" for name, f in manifest["files"].items())
               + f" ({manifest['structures']:,} possible program structures)")


@app.command()
@friendly
def mix(percent: int, params: ParamsOpt = Path("params.yaml")):
    """Build the code training set with PERCENT% general-domain rows (stage `mix@PERCENT`)."""
    from instdiv import mix as mixing
    from instdiv.config import load_params

    counts = mixing.run(load_params(params).mix, percent)
    typer.echo(f"data/mix/general-{percent}.parquet: {counts['rows']:,} rows, " +
               ", ".join(f"{k} {v:,}" for k, v in counts["sources"].items()))


@app.command("code-train")
@friendly
def code_train(percent: int, params: ParamsOpt = Path("params.yaml")):
    """Train the code model on the mix with PERCENT% general-domain rows (stage `code_train@PERCENT`)."""
    from instdiv import codetrain
    from instdiv.config import load_params

    info = codetrain.train(load_params(params), percent)
    if info:
        typer.echo(f"models/code/general-{percent}.pt: {info['steps']} steps in {info['fit_seconds']} s, "
                   f"best validation exact match {info['best_score']:.3f}")


@app.command("code-eval")
@friendly
def code_eval(percent: int, params: ParamsOpt = Path("params.yaml")):
    """Run the code model's programs against the hidden tests in the sandbox (stage `code_eval@PERCENT`)."""
    from instdiv import codeeval
    from instdiv.config import load_params

    m = codeeval.evaluate(load_params(params), percent)
    typer.echo(f"{percent}% general: pass@1 {m['pass_at_1']:.3f}, parses {m['parse_rate']:.3f} "
               f"({m['programs']} held-out programs)")


@app.command("code-report")
@friendly
def code_report(params: ParamsOpt = Path("params.yaml")):
    """pass@1 against the general-domain share beside the paper's table (stage `code_report`)."""
    from instdiv import codeeval
    from instdiv.config import load_params

    typer.echo(codeeval.report(load_params(params))["verdict"])


@app.command()
@friendly
def experiment(name: str, params: ParamsOpt = Path("params.yaml")):
    """Run one of the paper's experiments (experiments/<name>.yaml); write reports/<name>/ and reports/index.md."""
    from instdiv import experiments

    metrics = experiments.run(name, params)
    typer.echo(f"experiment {name}: {metrics['trials']} training runs; see reports/{name}/figure.png and "
               "reports/index.md")


@app.command()
@friendly
def dashboard(params: ParamsOpt = Path("params.yaml"),
              port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080):
    """Serve optuna-dashboard for the sweep's storage on 127.0.0.1."""
    import subprocess

    from instdiv.config import load_params
    from instdiv.sweep import _dashboard_arg

    arg = _dashboard_arg(load_params(params))
    typer.echo(f"optuna-dashboard {arg} at http://127.0.0.1:{port}")
    exe = Path(sys.executable).parent / "optuna-dashboard"
    subprocess.run([str(exe), arg, "--host", "127.0.0.1", "--port", str(port)])


def _write_params(p) -> Path:
    """Params with a command-line override, as a file the sweep's worker processes can load."""
    import dataclasses
    import tempfile

    fd, name = tempfile.mkstemp(prefix="instdiv-params-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(dataclasses.asdict(p), f, sort_keys=False)
    return Path(name)


@app.command()
@friendly
def preset(name: str, params: ParamsOpt = Path("params.yaml")):
    """Print `-S key=value` arguments of a preset: `dvc exp run $(instdiv preset paper)`."""
    from instdiv.config import ConfigError, load_params, params_from_dict

    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"no preset '{name}'; known presets: {known}")
    overrides = yaml.safe_load(path.read_text())
    load_params(params)
    merged = yaml.safe_load(Path(params).read_text())
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    params_from_dict(merged, source=f"{params} + preset {name}")  # fail here, not half-way through a run
    args = [f"-S {s}.{k}={json.dumps(v, separators=(',', ':'))}"
            for s, values in overrides.items() for k, v in values.items()]
    typer.echo(" ".join(args))


def main():  # pragma: no cover - console entry
    sys.exit(app())
