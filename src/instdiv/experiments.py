"""The paper's experiments as named, versioned grid sweeps, each read as one figure beside the paper's finding.

An experiment is a file `experiments/<name>.yaml`: a title, the paper's finding, which axes the figure puts
on x and as series, and overrides of `params.yaml` sections (usually `sweep` with its grid axes). It runs
through the sweep (same Optuna storage, MLflow parent and nested runs) and writes `reports/<name>/`.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from instdiv import rewrite, sweep
from instdiv.config import Params, params_from_dict, section_from_dict
from instdiv.errors import ConfigError

EXPERIMENTS_DIR = Path("experiments")
REPORTS_DIR = Path("reports")
METRICS = ("unseen_op_accuracy", "unseen_accuracy", "seen_accuracy", "unseen_noop_accuracy")


@dataclass(frozen=True)
class ExperimentConfig:
    title: str = ""
    paper: str = ""  # the paper's finding, shown beside ours
    x: str = "n_instructions"  # the figure's x axis: n_instructions or a sweep axis
    series: str = "n_instructions"  # one line per value of this axis
    x_log: bool = False
    metric: str = "unseen_op_accuracy"
    params: dict = field(default_factory=dict)  # overrides of params.yaml sections

    def validate(self) -> None:
        if not self.title:
            raise ConfigError("experiment: give it a title")
        if self.metric not in METRICS:
            raise ConfigError(f"experiment.metric={self.metric!r}: one of {', '.join(METRICS)}")


def names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.name != "dvc.yaml")


def declaration(name: str) -> ExperimentConfig:
    """experiments/<name>.yaml, validated; keys left out take the defaults."""
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no experiment '{name}' ({path} not found); known: {', '.join(names()) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return section_from_dict(ExperimentConfig, {**dataclasses.asdict(ExperimentConfig()), **raw}, str(path))


def load(name: str, params_path: str | Path = "params.yaml") -> tuple[ExperimentConfig, Params]:
    """The experiment's declaration and the full params it runs with (params.yaml + its overrides)."""
    exp = declaration(name)
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    base = yaml.safe_load(Path(params_path).read_text())
    for section, values in exp.params.items():
        if section not in base or not isinstance(values, dict):
            raise ConfigError(f"{path}: params.{section} is not a section of {params_path} with keys to override")
        base[section] = {**base[section], **values}
    params = params_from_dict(base, source=f"{params_path} + {path}")
    axes = sweep.axis_names(params)
    for key in (exp.x, exp.series):
        if key not in axes:
            raise ConfigError(f"{path}: '{key}' is not an axis of this sweep (axes: {', '.join(axes)})")
    if params.sweep.mode != "grid":
        raise ConfigError(f"{path}: experiments run grid sweeps; set params.sweep.mode: grid")
    return exp, params


def run(name: str, params_path: str | Path = "params.yaml") -> dict:
    """Run the experiment's sweep (resuming it if interrupted) and write reports/<name>/."""
    exp, params = load(name, params_path)
    sweep.check(params)
    out = REPORTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    resolved = out / "params.yaml"  # the exact settings, also what the sweep's worker processes load
    resolved.write_text(yaml.safe_dump(dataclasses.asdict(params), sort_keys=False))
    frame = sweep.run(resolved, out / "trials.csv")
    return report(name, exp, params, frame)


def report(name: str, exp: ExperimentConfig, params: Params, frame: pd.DataFrame) -> dict:
    out = REPORTS_DIR / name
    done = frame[frame["state"] == "COMPLETE"].copy()
    keys = [exp.series, exp.x] if exp.series != exp.x else [exp.x]
    present = [m for m in METRICS if m in done]
    points = done.groupby(keys, dropna=False)[present].mean().reset_index()
    points["seeds"] = done.groupby(keys, dropna=False).size().to_numpy()
    if "skew" in sweep.axis_names(params):
        counts = [_counts(params, row) for row in points.to_dict("records")]
        points["effective_instructions"] = [round(rewrite.effective_instructions(c), 1) for c in counts]
        points["instructions_holding_99pct"] = [rewrite.instructions_holding(c, 0.99) for c in counts]
    points.to_csv(out / "points.csv", index=False)
    minutes = float(done["fit_seconds"].sum() / 60) if "fit_seconds" in done else float("nan")
    metrics = {"trials": int(len(done)), "training_minutes": round(minutes, 1),
               "points": points.round(4).replace({np.nan: None}).to_dict("records")}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    figure(exp, points, out / "figure.png")
    write_index()
    return metrics


def _counts(params: Params, row: dict) -> np.ndarray:
    """Training examples per instruction at a point of the sweep."""
    point = {k: row[k] for k in sweep.axis_names(params) if k in row}
    point.setdefault("seed", params.sweep.seeds[0])
    cfg = sweep.trial_params(params, point).rewrite
    return rewrite.split_counts(cfg.train_examples, cfg.n_instructions, cfg.skew)


def figure(exp: ExperimentConfig, points: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    groups = points.groupby(exp.series) if exp.series != exp.x else [(None, points)]
    for value, g in groups:
        g = g.sort_values(exp.x)
        label = f"{exp.series} = {value}" if value is not None else exp.metric
        ax.plot(g[exp.x], g[exp.metric], marker="o", label=label)
    if exp.x_log:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(exp.x.replace("_", " "))
    ax.set_ylabel(exp.metric.replace("_", " "))
    ax.set_title(exp.title, fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "Paper: " + textwrap.fill(" ".join(exp.paper.split()), 130), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def write_index() -> None:
    """reports/index.md: every experiment that has a report, its figure and the paper's finding."""
    lines = ["# Experiments", "", "Generated by `instdiv experiment`; one section per experiment with a report.", ""]
    for name in names():
        out = REPORTS_DIR / name
        if not (out / "metrics.json").is_file():
            continue
        exp = declaration(name)
        metrics = json.loads((out / "metrics.json").read_text())
        lines += [f"## {exp.title}", "", f"`dvc repro experiments/dvc.yaml:experiment@{name}`: "
                  f"{metrics['trials']} training runs, {metrics['training_minutes']} minutes of training.", "",
                  f"![{name}]({name}/figure.png)", "", f"**Paper:** {' '.join(exp.paper.split())}", "",
                  pd.DataFrame(metrics["points"]).to_markdown(index=False), ""]
    (REPORTS_DIR / "index.md").write_text("\n".join(lines))
