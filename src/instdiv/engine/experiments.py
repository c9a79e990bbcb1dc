"""The paper's experiments as named, versioned grid sweeps, each read as one figure beside the paper's finding.

An experiment is a file `experiments/<name>.yaml`: a title, the paper's finding, which axes the figure puts
on x and as series, and overrides of `params.yaml` sections (usually `sweep` with its grid axes). It runs
through the sweep (same Optuna storage, MLflow parent and nested runs) and writes `reports/<name>/`.
"""

from __future__ import annotations

import json
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from instdiv.config import PRESETS_DIR, Section, parse
from instdiv.engine import sweep
from instdiv.errors import ConfigError
from instdiv.params import Params, params_from_dict, params_type

EXPERIMENTS_DIR = Path("experiments")
REPORTS_DIR = Path("reports")


class ExperimentConfig(Section):
    """experiments/<name>.yaml: a figure's layout, the paper's finding, and overrides of params.yaml."""

    section: ClassVar[str] = "experiment"
    title: str = ""
    paper: str = ""  # the paper's finding, shown beside ours
    x: str | None = None  # the figure's x axis: a sweep axis; null: the task's count axis (I)
    series: str | None = None  # one line per value of this axis; null: the task's count axis
    panel: str | None = None  # one plot per value of this axis
    x_log: bool = False
    metrics: list[str] | None = None  # one row of plots each; null: the metric the task monitors
    params: dict = Field(default_factory=dict)  # overrides of params.yaml sections
    # The paper's scale (a GPU): `dvc exp run -S experiments/<name>.yaml:scale=paper ...` applies the
    # package's paper preset (instdiv/presets/paper.yaml), then paper_scale, on top of params.
    scale: Literal["laptop", "paper"] = "laptop"
    paper_scale: dict = Field(default_factory=dict)
    # The paper's table, printed beside ours (metrics[0]): its columns, values of x matched to ours by rank
    # (the paper's largest to our largest), and its rows {label: values}, matched by position to the
    # series values as the sweep lists them.
    paper_table: dict = Field(default_factory=dict)

    def check(self) -> None:
        if not self.title:
            raise ConfigError("experiment: give it a title")
        if self.metrics == []:
            raise ConfigError("experiment.metrics: name at least one, e.g. [unseen_op_accuracy]")
        if self.paper_table and set(self.paper_table) != {"columns", "rows"}:
            raise ConfigError("experiment.paper_table: give columns (the paper's values of x) and rows "
                              "({our series value: the paper's values, one per column})")


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
    return parse(ExperimentConfig, raw, str(path))


def load(name: str, params_path: str | Path = "params.yaml") -> tuple[ExperimentConfig, Params]:
    """The experiment's declaration and the full params it runs with (params.yaml + its overrides)."""
    exp = declaration(name)
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    base = yaml.safe_load(Path(params_path).read_text())
    layers = [("params", exp.params)]
    if exp.scale == "paper":
        layers += [("presets/paper.yaml", yaml.safe_load((PRESETS_DIR / "paper.yaml").read_text())),
                   ("paper_scale", exp.paper_scale)]
    for where, overrides in layers:
        for section, values in overrides.items():
            if section not in params_type().model_fields or not isinstance(values, dict):
                raise ConfigError(f"{path}: {where}.{section} is not a section of {params_path} with keys to "
                                  "override")
            base[section] = {**(base.get(section) or {}), **values}
    params = params_from_dict(base, source=f"{params_path} + {path} ({exp.scale} scale)")
    task = params.task()
    exp = exp.replace(x=exp.x or task.count_axis, series=exp.series or task.count_axis,
                      metrics=exp.metrics or [task.monitor])
    for metric in exp.metrics:
        if not re.fullmatch(task.metric_pattern, metric):
            raise ConfigError(f"{path}: metrics: '{metric}' is not a metric task {task.name} reports (names of the "
                              f"form {task.metric_pattern}, e.g. {', '.join(task.metrics)})")
    axes = sweep.axis_names(params)
    for key in (exp.x, exp.series, exp.panel):
        if key is not None and key not in axes:
            raise ConfigError(f"{path}: '{key}' is not an axis of this sweep (axes: {', '.join(axes)})")
    if params.sweep.mode != "grid":
        raise ConfigError(f"{path}: experiments run grid sweeps; set params.sweep.mode: grid")
    if exp.paper_table:
        ours = _values(params, exp.x)
        if len(exp.paper_table["columns"]) != len(ours) or \
                any(len(v) != len(ours) for v in exp.paper_table["rows"].values()) or \
                len(exp.paper_table["rows"]) != len(_values(params, exp.series)):
            raise ConfigError(f"{path}: paper_table needs one column per value of {exp.x} ({len(ours)}), as many "
                              f"values in each row, and one row per value of {exp.series}")
    return exp, params


def _values(params: Params, axis: str) -> list:
    """An axis's values as they are written in trials.csv (lists JSON-encoded)."""
    values = params.sweep.instructions if axis == params.task().count_axis else \
        params.sweep.seeds if axis == "seed" else params.sweep.axes[axis]
    return [sweep.encode(v) for v in values]


def _is_range(task, axis: str) -> bool:
    """Whether the axis is a length or a [min, max] range (int | list[int]), so [3, 8] reads 3-8."""
    annotation = task.axis_types().get(axis)
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return int in args and list[int] in args


def label(task, axis: str, value) -> str:
    """An axis value as people read it: [3, 8] -> 3-8 for ranges, [1, 5, 10] -> {1, 5, 10}, [a, b] -> a+b."""
    value = sweep.decode(value)
    special = task.label(axis, value)
    if special is not None:
        return special
    if not isinstance(value, list):
        return str(value)
    if _is_range(task, axis):
        return f"{value[0]}-{value[1]}" if value[0] != value[1] else str(value[0])
    if all(isinstance(v, str) for v in value):
        return "+".join(value)
    return str(value[0]) if len(value) == 1 else "mixed {" + ", ".join(map(str, value)) + "}"


def run(name: str, params_path: str | Path = "params.yaml") -> dict:
    """Run the experiment's sweep (resuming it if interrupted) and write reports/<name>/."""
    exp, params = load(name, params_path)
    sweep.check(params)
    out = REPORTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    # The exact settings, as a record of what ran.
    (out / "params.yaml").write_text(yaml.safe_dump(params.dump(), sort_keys=False))
    frame = sweep.run(params, out / "trials.csv")
    return report(name, exp, params, frame)


def report(name: str, exp: ExperimentConfig, params: Params, frame: pd.DataFrame) -> dict:
    out = REPORTS_DIR / name
    task = params.task()
    metric = re.compile(task.metric_pattern)
    done = frame[frame["state"] == "COMPLETE"].copy()
    keys = list(dict.fromkeys(k for k in (exp.panel, exp.series, exp.x) if k is not None))
    missing = [m for m in exp.metrics if m not in done]
    if missing:
        raise ConfigError(f"experiments/{name}.yaml: metrics {missing} were not measured (measured: "
                          f"{', '.join(c for c in done if metric.fullmatch(c))}); name a test split the data has")
    present = [c for c in done if metric.fullmatch(c)]
    points = done.groupby(keys, dropna=False)[present].mean().reset_index()
    points["seeds"] = done.groupby(keys, dropna=False).size().to_numpy()
    axes = sweep.axis_names(params)
    extra = [task.point_columns(_point_params(params, row), axes) for row in points.to_dict("records")]
    for column in dict.fromkeys(k for e in extra for k in e):
        points[column] = [e.get(column) for e in extra]
    points.to_csv(out / "points.csv", index=False)
    minutes = float(done["fit_seconds"].sum() / 60) if "fit_seconds" in done else float("nan")
    metrics = {"trials": int(len(done)), "training_minutes": round(minutes, 1),
               "points": points.round(4).replace({np.nan: None}).to_dict("records")}
    if exp.paper_table:
        table = beside_paper(exp, params, points)
        (out / "table.md").write_text(table + "\n")
        metrics["table"], metrics["table_metric"] = table, exp.metrics[0]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    figure(exp, params, points, out / "figure.png")
    write_index()
    return metrics


def beside_paper(exp: ExperimentConfig, params: Params, points: pd.DataFrame) -> str:
    """The paper's table layout, each cell `ours / paper` (ours: metrics[0], mean over seeds)."""
    t, task = exp.paper_table, params.task()
    metric = exp.metrics[0]
    ranked = sorted(points[exp.x].unique())
    ours = [ranked[sorted(t["columns"]).index(c)] for c in t["columns"]]
    cols = [f"{exp.x} {label(task, exp.x, o)} (paper {c})" for o, c in zip(ours, t["columns"])]
    lines = [f"| {exp.series} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row, (paper_row, theirs) in zip(_values(params, exp.series), t["rows"].items()):
        cells = []
        for ours_x, paper_value in zip(ours, theirs):
            hit = points[(points[exp.series].astype(str) == str(sweep.encode(row)))
                         & (points[exp.x].astype(str) == str(sweep.encode(ours_x)))]
            mine = f"{hit[metric].iloc[0]:.2f}" if len(hit) else "-"
            cells.append(f"{mine} / {paper_value:.2f}")
        lines.append(f"| {label(task, exp.series, row)} (paper {paper_row}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _point_params(params: Params, row: dict) -> Params:
    """The settings of the trials at an experiment's point."""
    point = {k: row[k] for k in sweep.axis_names(params) if k in row}
    point.setdefault("seed", params.sweep.seeds[0])
    return sweep.trial_params(params, point)


def figure(exp: ExperimentConfig, params: Params, points: pd.DataFrame, path: Path) -> None:
    """Rows: the metrics; columns: the panel axis's values; x and one line per series value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = params.task()
    panels = _values(params, exp.panel) if exp.panel else [None]
    rows = len(exp.metrics)
    width = max(6.0, 4.2 * len(panels)) + 2.0  # the legend takes the right-hand 2 inches
    fig, axes = plt.subplots(rows, len(panels), figsize=(width, 1.0 + 3.6 * rows), dpi=120, squeeze=False,
                             sharey=True)
    x_values = _values(params, exp.x)
    categorical = any(isinstance(v, str) for v in x_values)
    position = {str(v): i for i, v in enumerate(x_values)}  # categorical x: in the order the sweep lists them
    order = {str(v): i for i, v in enumerate(_values(params, exp.series))}
    for r, metric in enumerate(exp.metrics):
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            sub = points if panel is None else points[points[exp.panel].astype(str) == str(panel)]
            groups = sub.groupby(exp.series, sort=False) if exp.series != exp.x else [(None, sub)]
            for value, g in sorted(groups, key=lambda item: order.get(str(item[0]), 0)):
                if categorical:
                    g = g.assign(_x=[position[str(v)] for v in g[exp.x]]).sort_values("_x")
                    xs = g["_x"]
                else:
                    g = g.sort_values(exp.x)
                    xs = g[exp.x]
                name = label(task, exp.series, value) if value is not None else metric
                ax.plot(xs, g[metric], marker="o", label=name)
            if categorical:
                ax.set_xticks(range(len(x_values)), [label(task, exp.x, v) for v in x_values])
            elif exp.x_log:
                ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(exp.x.replace("_", " "))
            if c == 0:
                ax.set_ylabel(metric.replace("_", " "))
            if panel is not None:
                ax.set_title(f"{exp.panel.replace('_', ' ')} = {label(task, exp.panel, panel)}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title=exp.series.replace("_", " ") if exp.series != exp.x else None,
               fontsize=8, loc="center right")
    fig.suptitle(exp.title, fontsize=10)
    fig.text(0.01, 0.01, "Paper: " + textwrap.fill(" ".join(exp.paper.split()), 140), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.1 if rows == 1 else 0.06, 1 - 2.0 / width, 0.96))
    fig.savefig(path)
    plt.close(fig)


def _table_metric(name: str, exp: ExperimentConfig, metrics: dict) -> str:
    """The metric of a report's paper table; for reports written before it was recorded, the declaration's
    first metric or else the monitored metric of the task in the report's record of its params."""
    if "table_metric" in metrics:
        return metrics["table_metric"]
    if exp.metrics:
        return exp.metrics[0]
    return params_from_dict(yaml.safe_load((REPORTS_DIR / name / "params.yaml").read_text())).task().monitor


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
                  f"![{name}]({name}/figure.png)", "", f"**Paper:** {' '.join(exp.paper.split())}", ""]
        if "table" in metrics:
            lines += [f"Ours / paper ({_table_metric(name, exp, metrics)}):", "", metrics["table"], ""]
        lines += [pd.DataFrame(metrics["points"]).to_markdown(index=False), ""]
    (REPORTS_DIR / "index.md").write_text("\n".join(lines))
