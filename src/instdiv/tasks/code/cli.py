"""The code study's commands, one per DVC stage: code-data, mix, code-train, code-eval, code-report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from instdiv.errors import friendly

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Parameter file (params.yaml).")]


def register(app: typer.Typer) -> None:
    @app.command("code-data")
    @friendly
    def code_data(params: ParamsOpt = Path("params.yaml")):
        """Generate the synthetic code tasks under data/code/ (stage `code_data`)."""
        from instdiv.params import load_params
        from instdiv.tasks.code import programs

        cfg = load_params(params).code
        manifest = programs.write(programs.generate(cfg), cfg)
        typer.echo(", ".join(f"{name}: {f['rows']:,} rows" for name, f in manifest["files"].items())
                   + f" ({manifest['structures']:,} possible program structures)")

    @app.command()
    @friendly
    def mix(percent: int, params: ParamsOpt = Path("params.yaml")):
        """Build the code training set with PERCENT% general-domain rows (stage `mix@PERCENT`)."""
        from instdiv.params import load_params
        from instdiv.tasks.code import mix as mixing

        counts = mixing.run(load_params(params).mix, percent)
        typer.echo(f"data/mix/general-{percent}.parquet: {counts['rows']:,} rows, " +
                   ", ".join(f"{k} {v:,}" for k, v in counts["sources"].items()))

    @app.command("code-train")
    @friendly
    def code_train(percent: int, seed: Annotated[int, typer.Option(help="The model's seed.")] = 0,
                   params: ParamsOpt = Path("params.yaml")):
        """Train the code model on the mix with PERCENT% general-domain rows (stage `code_train@PERCENT-SEED`)."""
        from instdiv.params import load_params
        from instdiv.tasks.code import study

        info = study.train(load_params(params), percent, seed)
        if info:
            typer.echo(f"{study.model_path(percent, seed)}: {info['steps']} steps in {info['fit_seconds']} s, "
                       f"last validation exact match {info['last_validation']:.3f}")

    @app.command("code-eval")
    @friendly
    def code_eval(percent: int, seed: Annotated[int, typer.Option(help="The model's seed.")] = 0,
                  params: ParamsOpt = Path("params.yaml")):
        """Run the code model's programs against the hidden tests in the sandbox (stage `code_eval@PERCENT-SEED`)."""
        from instdiv.params import load_params
        from instdiv.tasks.code import study

        m = study.evaluate(load_params(params), percent, seed)
        typer.echo(f"{percent}% general, seed {seed}: pass@1 {m['pass_at_1']:.3f}, parses {m['parse_rate']:.3f} "
                   f"({m['programs']} held-out programs); on its own training programs "
                   f"{m['train_pass_at_1']:.3f}" + ("" if m.get("learned", True) else " UNTRAINED"))

    @app.command("code-report")
    @friendly
    def code_report(params: ParamsOpt = Path("params.yaml")):
        """pass@1 against the general-domain share beside the paper's table (stage `code_report`)."""
        from instdiv.params import load_params
        from instdiv.tasks.code import report

        typer.echo(report.report(load_params(params))["verdict"])
