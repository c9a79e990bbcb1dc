"""The paper's experiments as named, versioned grid sweeps, each read as one figure beside the paper's finding.

An experiment is a file `experiments/<name>.yaml`: a title, the paper's finding, which axes the figure puts
on x and as series, and overrides of `params.yaml` sections (usually `sweep` with its grid axes). It runs
through the sweep (same Optuna storage, MLflow parent and nested runs) and writes `reports/<name>/`.
"""

from __future__ import annotations

import json
import math
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
from instdiv.engine import findings as verdicts
from instdiv.engine import reports
from instdiv.engine import stats, sweep
from instdiv.errors import ConfigError
from instdiv.params import Params, params_from_dict, params_type

EXPERIMENTS_DIR = Path("experiments")
KNOBS = "params.yaml"  # experiments/params.yaml: each experiment's scale and weights (what dvc exp run -S sets)
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
    # Set in experiments/params.yaml, not here (the knobs DVC lists; the declaration is a dep). The paper's
    # scale (a GPU): `dvc exp run -S experiments/params.yaml:<name>.scale=paper ...` applies the package's
    # paper preset (instdiv/presets/paper.yaml), then paper_scale, on top of params. Another preset's name
    # (llama2-lora, deepseek-coder: a pretrained model's recipe) applies that preset too, then this
    # experiment's `presets.<name>`, with the model's weights from `weights` (a local directory).
    scale: str = "laptop"
    paper_scale: dict = Field(default_factory=dict)
    presets: dict[str, dict] = Field(default_factory=dict)
    weights: str | None = None
    # The paper's table, printed beside ours (metrics[0]): its columns, values of x matched to ours by rank
    # (the paper's largest to our largest), and its rows {label: values}, matched by position to the
    # series values as the sweep lists them.
    paper_table: dict = Field(default_factory=dict)
    # The paper's claims this experiment tests, each a contrast between two sets of its points, judged over
    # seeds (instdiv/engine/findings.py); reports/index.md lists them with their verdicts.
    findings: list[verdicts.Finding] = Field(default_factory=list)
    # A recipe experiment (engine/recipe.py): recipe keys (section.key) and the values to try, one axis at a
    # time around params.yaml's recipe, each value an outcomes-mode study of its own; I_50 "moves" when its
    # ratio to the reference's excludes 1, and is "the same" within x recipe_factor.
    recipe: dict[str, list] = Field(default_factory=dict)
    recipe_factor: float = 1.5

    def check(self) -> None:
        if not self.title:
            raise ConfigError("experiment: give it a title")
        if self.metrics == []:
            raise ConfigError("experiment.metrics: name at least one, e.g. [unseen_op_accuracy]")
        if self.scale not in ("laptop", "paper") and not (PRESETS_DIR / f"{self.scale}.yaml").is_file():
            known = ", ".join(["laptop", *sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))])
            raise ConfigError(f"experiment.scale={self.scale}: no such scale or preset; known: {known}")
        if self.paper_table and set(self.paper_table) != {"columns", "rows"}:
            raise ConfigError("experiment.paper_table: give columns (the paper's values of x) and rows "
                              "({our series value: the paper's values, one per column})")


def names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.name not in ("dvc.yaml", KNOBS))


def stage(name: str) -> str:
    """The DVC stage that runs the experiment (experiment@<name>, or experiment_from_base@<name> for those that
    depend on a base), as experiments/dvc.yaml's foreach lists declare it."""
    path = EXPERIMENTS_DIR / "dvc.yaml"
    for key, decl in ((_yaml(path).get("stages") or {}) if path.is_file() else {}).items():
        if key == name:
            return f"experiments/dvc.yaml:{key}"
        if isinstance(decl, dict) and name in (decl.get("foreach") or []):
            return f"experiments/dvc.yaml:{key}@{name}"
    return f"experiments/dvc.yaml:experiment@{name}"


def _yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def knobs(name: str) -> dict:
    """The experiment's entry in experiments/params.yaml ({} when the file or the entry is absent: laptop)."""
    path = EXPERIMENTS_DIR / KNOBS
    values = _yaml(path).get(name) if path.is_file() else None
    if values is None:
        return {}
    if not isinstance(values, dict) or set(values) - {"scale", "weights"}:
        raise ConfigError(f"{path}: {name} takes scale and weights only, e.g. {name}: {{scale: laptop, weights: "
                          "null}")
    return values


def declaration(name: str) -> ExperimentConfig:
    """experiments/<name>.yaml, validated, with its knobs from experiments/params.yaml; keys left out take the
    defaults."""
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no experiment '{name}' ({path} not found); known: {', '.join(names()) or 'none'}")
    raw = _yaml(path)
    for k, finding in enumerate(raw.get("findings") or [], 1):
        if isinstance(finding, dict) and "margin" not in finding:
            raise ConfigError(f"{path}: findings[{k}].margin is missing: declare the smallest difference that "
                              "matters, from the paper's effect size (e.g. half of it), and say how in a comment")
    for key in ("scale", "weights"):
        if key in raw:
            raise ConfigError(f"{path}: {key} is a knob; set it in {EXPERIMENTS_DIR / KNOBS} ({name}.{key}), where "
                              "dvc exp run -S and dvc exp show find it")
    return parse(ExperimentConfig, {**raw, **knobs(name)}, str(path))


def load(name: str, params_path: str | Path = "params.yaml") -> tuple[ExperimentConfig, Params]:
    """The experiment's declaration and the full params it runs with (params.yaml + its overrides)."""
    exp = declaration(name)
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    base = yaml.safe_load(Path(params_path).read_text())
    layers = [("params", exp.params)]
    if exp.scale != "laptop":
        layers += [("presets/paper.yaml", yaml.safe_load((PRESETS_DIR / "paper.yaml").read_text())),
                   ("paper_scale", exp.paper_scale)]
    if exp.scale not in ("laptop", "paper"):  # a pretrained model's recipe on the paper's data
        layers += [(f"presets/{exp.scale}.yaml", yaml.safe_load((PRESETS_DIR / f"{exp.scale}.yaml").read_text())),
                   (f"presets.{exp.scale}", exp.presets.get(exp.scale, {}))]
    if exp.weights is not None:
        layers.append(("weights", {"model": {"path": exp.weights}}))
    for where, overrides in layers:
        for section, values in overrides.items():
            if section not in params_type().model_fields or not isinstance(values, dict):
                raise ConfigError(f"{path}: {where}.{section} is not a section of {params_path} with keys to "
                                  "override")
            current = base.get(section) or {}
            if section == "model" and values.get("kind", current.get("kind", "gpt")) != current.get("kind", "gpt"):
                current = {}  # another model family: its own keys, none of the previous one's
            base[section] = {**current, **values}
    # One study name per experiment, so its journal is studies/exp-<name>.journal (experiments/dvc.yaml).
    base.setdefault("sweep", {})["study"] = f"exp-{name}"
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
    for k, finding in enumerate(exp.findings):
        if finding.metric is not None and not re.fullmatch(task.metric_pattern, finding.metric):
            raise ConfigError(f"{path}: findings[{k}].metric '{finding.metric}' is not a metric task {task.name} "
                              "reports")
        for side in ("higher", "lower"):
            for key, value in getattr(finding, side).items():
                if key not in axes:
                    raise ConfigError(f"{path}: findings[{k}].{side}.{key}: not an axis of this sweep (axes: "
                                      f"{', '.join(axes)})")
                # (at paper scale the grid differs: a finding whose points are not in it is not testable there)
                if exp.scale == "laptop" and str(sweep.encode(value)) not in map(str, _values(params, key)):
                    raise ConfigError(f"{path}: findings[{k}].{side}.{key}={value} is not among the sweep's values "
                                      f"{_values(params, key)}")
    if exp.recipe and params.sweep.mode != "outcomes":
        raise ConfigError(f"{path}: a recipe experiment places each setting's runs by their outcomes; set "
                          "params.sweep.mode: outcomes")
    if not exp.recipe and params.sweep.mode != "grid":
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
    if value is None:
        return "null"  # as params.yaml writes it
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
    out = REPORTS_DIR / name
    if exp.recipe:
        from instdiv.engine import recipe

        out.mkdir(parents=True, exist_ok=True)
        (out / "params.yaml").write_text(yaml.safe_dump(params.dump(), sort_keys=False))
        return recipe.run(name, exp, params, out, after=write_index)
    sweep.check(params)
    out.mkdir(parents=True, exist_ok=True)
    # The exact settings, as a record of what ran.
    (out / "params.yaml").write_text(yaml.safe_dump(params.dump(), sort_keys=False))
    frame = sweep.run(params, out / "trials.csv")
    return report(name, exp, params, frame)


def report(name: str, exp: ExperimentConfig, params: Params, frame: pd.DataFrame) -> dict:
    """reports/<name>/: each point's mean over the seeds that learned their training instructions, with its
    interval over seeds; every run in the figure (hollow where untrained); the findings and their verdicts."""
    out = REPORTS_DIR / name
    task = params.task()
    metric = re.compile(task.metric_pattern)
    done = frame[frame["state"] == "COMPLETE"].copy()
    done["learned"] = verdicts.judge_runs(task, done, params.evaluate.learned_at)
    keys = list(dict.fromkeys(k for k in (exp.panel, exp.series, exp.x) if k is not None))
    missing = [m for m in exp.metrics if m not in done]
    if missing:
        raise ConfigError(f"experiments/{name}.yaml: metrics {missing} were not measured (measured: "
                          f"{', '.join(c for c in done if metric.fullmatch(c))}); name a test split the data has")
    present = [c for c in done if metric.fullmatch(c) or c.endswith("_in_train")]
    points = _points(done, keys, present, exp.metrics, params.sweep.confidence)
    axes = sweep.axis_names(params)
    extra = [task.point_columns(_point_params(params, row), axes) for row in points.to_dict("records")]
    for column in dict.fromkeys(k for e in extra for k in e):
        points[column] = [e.get(column) for e in extra]
    points.to_csv(out / "points.csv", index=False)
    done.to_csv(out / "runs.csv", index=False, columns=[c for c in [*axes, "learned", *present] if c in done])
    minutes = float(done["fit_seconds"].sum() / 60) if "fit_seconds" in done else float("nan")
    judged = [verdicts.evaluate(f, done, f.metric or exp.metrics[0], params.sweep.confidence)
              for f in exp.findings]
    metrics = {"trials": int(len(done)), "untrained": int((~done["learned"]).sum()),
               "seeds": len(params.sweep.seeds), "training_minutes": round(minutes, 1),
               "findings": [reports.json_safe(f) for f in judged],
               "points": points.round(4).replace({np.nan: None}).to_dict("records")}
    if exp.paper_table:
        table = beside_paper(exp, params, points)
        (out / "table.md").write_text(table + "\n")
        metrics["table"], metrics["table_metric"] = table, exp.metrics[0]
    # metrics.json: the counts and each finding's difference with its interval (finding1, finding2, ...)
    numeric = {k: metrics[k] for k in ("trials", "untrained", "seeds", "training_minutes")}
    numeric.update({f"finding{i}": {k: f.get(k) for k in ("difference", "ci_low", "ci_high", "seeds")}
                    for i, f in enumerate(judged, 1)})
    reports.write(out, numeric, metrics)
    figure(exp, params, points, done, out / "figure.png")
    write_index()
    return metrics


def _points(done: pd.DataFrame, keys: list[str], present: list[str], shown: list[str],
            confidence: float) -> pd.DataFrame:
    """One row per point: means over its trained runs, `<metric>_low/_high` (the interval over seeds) for the
    metrics shown, how many seeds trained and how many runs did not."""
    trained = done[done["learned"]]
    points = done.groupby(keys, dropna=False).size().rename("runs").reset_index()
    means = trained.groupby(keys, dropna=False)[present].mean().reset_index()
    points = points.merge(means, on=keys, how="left")
    for m in shown:
        bounds = trained.groupby(keys, dropna=False)[m].apply(
            lambda v: verdicts.seed_interval(v.tolist(), confidence)[1:]).reset_index(name="_b")
        # an accuracy's interval stops at 0 and 1 (a t interval over 3 seeds can reach past them)
        bounds[f"{m}_low"] = [max(0.0, b[0]) if b[0] == b[0] else b[0] for b in bounds["_b"]]
        bounds[f"{m}_high"] = [min(1.0, b[1]) if b[1] == b[1] else b[1] for b in bounds["_b"]]
        points = points.merge(bounds.drop(columns="_b"), on=keys, how="left")
    counts = trained.groupby(keys, dropna=False).size().rename("seeds").reset_index()
    points = points.merge(counts, on=keys, how="left")
    points["seeds"] = points["seeds"].fillna(0).astype(int)
    points["untrained"] = points.pop("runs") - points["seeds"]
    return points


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
            hit = points[sweep.at(points, {exp.series: row, exp.x: ours_x})]
            mine = f"{hit[metric].iloc[0]:.2f}" if len(hit) else "-"
            cells.append(f"{mine} / {paper_value:.2f}")
        lines.append(f"| {label(task, exp.series, row)} (paper {paper_row}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _point_params(params: Params, row: dict) -> Params:
    """The settings of the trials at an experiment's point."""
    point = {k: row[k] for k in sweep.axis_names(params) if k in row}
    point.setdefault("seed", params.sweep.seeds[0])
    return sweep.trial_params(params, point)


def figure(exp: ExperimentConfig, params: Params, points: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    """Rows: the metrics; columns: the panel axis's values; x and one line per series value: every seed's run
    (hollow where it did not learn its training instructions) and the mean over trained seeds with its
    interval over seeds."""
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
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def xs_of(frame):
        return [position[str(v)] for v in frame[exp.x]] if categorical else frame[exp.x]

    for r, metric in enumerate(exp.metrics):
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            sub = points if panel is None else points[sweep.at(points, {exp.panel: panel})]
            mine = runs if panel is None else runs[sweep.at(runs, {exp.panel: panel})]
            # one line per series value, a null one (model.init: null) included
            by_series = exp.series != exp.x
            groups = sub.groupby(exp.series, sort=False, dropna=False) if by_series else [(None, sub)]
            for k, (value, g) in enumerate(sorted(groups, key=lambda item: order.get(
                    str(sweep.encode(sweep.decode(item[0]))), 0))):
                color = colors[k % len(colors)]
                g = g.assign(_x=xs_of(g)).sort_values("_x")
                seeds = mine[sweep.at(mine, {exp.series: value})] if by_series else mine
                jitter = 0.08 if categorical else 0.0
                for learned, style in ((True, {"color": color}), (False, {"facecolors": "none", "edgecolors": color})):
                    part = seeds[seeds["learned"] == learned]
                    if len(part):
                        ax.scatter(np.asarray(xs_of(part), float) + jitter * (k - 1), part[metric], s=14,
                                   alpha=0.45 if learned else 0.9, zorder=2, **style)
                name = label(task, exp.series, value) if by_series else metric
                low, high = g.get(f"{metric}_low"), g.get(f"{metric}_high")
                yerr = None if low is None else np.vstack([(g[metric] - low).fillna(0), (high - g[metric]).fillna(0)])
                ax.errorbar(g["_x"], g[metric], yerr=yerr, marker="o", ms=4, capsize=2, color=color, label=name,
                            zorder=3)
            if categorical:
                ax.set_xticks(range(len(x_values)), [label(task, exp.x, v) for v in x_values])
            elif exp.x_log:
                ax.set_xscale("log")
                ax.set_xticks([float(v) for v in x_values], [label(task, exp.x, v) for v in x_values])
                ax.minorticks_off()
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(exp.x.replace("_", " "))
            if c == 0:
                ax.set_ylabel(metric.replace("_", " "))
            if panel is not None:
                ax.set_title(f"{exp.panel.replace('_', ' ')} = {label(task, exp.panel, panel)}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title=exp.series.replace("_", " ") if exp.series != exp.x else None,
               fontsize=8, loc="center right")
    untrained = int((~runs["learned"]).sum())
    fig.suptitle(f"{exp.title}\nlines: mean over trained seeds, {params.sweep.confidence:.0%} interval over seeds; "
                 f"dots: each run (hollow: untrained, {untrained} of {len(runs)})", fontsize=9)
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


def _ours(f: dict) -> str:
    if f.get("difference") is None:  # no seed with trained runs on both sides
        return (f"no difference: {f['untrained_runs']} of {f['runs']} runs untrained" if f.get("runs")
                else _seeds(f['seeds']))
    ci = f" ({f['confidence']:.0%} interval {f['ci_low']:+.2f} to {f['ci_high']:+.2f})" if f.get("ci_low") is not None \
        else ""
    return (f"{f['higher_mean']:.2f} vs {f['lower_mean']:.2f} {f['metric'].replace('_', ' ')}: "
            f"{f['difference']:+.2f}{ci}, {_seeds(f['seeds'])}")


def _all_runs(f: dict) -> str:
    """The same contrast over every run, the untrained included (the finding's verdict rests on the trained)."""
    a = f.get("all_runs")
    if not a or a.get("difference") is None or a["difference"] != a["difference"]:
        return "-"
    if not f.get("untrained_runs"):
        return "the same (every run learned)"
    ci = f" ({a['ci_low']:+.2f} to {a['ci_high']:+.2f})" if a.get("ci_low") is not None and \
        a["ci_low"] == a["ci_low"] else ""
    return f"{a['difference']:+.2f}{ci}: {a['verdict']}"


def _recipe_section(name: str, exp: ExperimentConfig, metrics: dict) -> list[str]:
    """A recipe experiment: each setting's I_50 beside the reference's, and per axis whether it moves (a
    question of this suite's, not the paper's: no verdict against the paper, none counted among them)."""
    lines = [f"## {exp.title}", "", f"`dvc repro {stage(name)}`: {metrics['trials']} training runs "
             f"({metrics['untrained']} untrained), {metrics['settings_measured']} of {metrics['settings']} settings "
             f"measured, {metrics['training_minutes']} minutes of training.", "", f"![{name}]({name}/figure.png)", "",
             f"{' '.join(exp.paper.split())}", "", "| recipe | runs | untrained | I_50 (90% interval) | all runs | "
             "against the reference | |", "|---|---|---|---|---|---|---|"]
    for p in metrics.get("points", []):
        i50 = "not located" if p.get("i50") is None else (
            f"{p['i50']:.0f}" + (f" ({p['ci_low']:.0f}-{p['ci_high']:.0f})" if p.get("ci_low") is not None else ""))
        every = "-" if p.get("all_runs_i50") is None else f"{p['all_runs_i50']:.0f}"
        lines.append(f"| {p['axis']} = {p['value']} | {p['runs']} | {p['untrained']} | {i50} | {every} | "
                     f"{p['verdict']} | {p['why']} |")
    lines += ["", "| axis | values | measured | I_50 |", "|---|---|---|---|"]
    for a in metrics.get("recipe", []):
        lines.append(f"| {a['axis']} | {a['values']} | {a['measured']} | {a['why']} |")
    return lines + [""]


def recipe_line(raw: dict) -> str:
    """The training recipe a report's runs used (its params.yaml record): a finding holds for this recipe."""
    t, m = raw.get("train", {}), raw.get("model", {})
    steps = f"{t['max_steps']:,} steps" if t.get("max_steps") else f"{t.get('epochs')} epochs"
    shape = (f", d_model {m['d_model']} x {m['n_layer']} layers" if "d_model" in m else f", {m.get('kind')} model") + \
        (f" from {Path(m['init']).name}" if m.get("init") else "")
    return (f"{t.get('optimizer', 'adamw')}, lr {t.get('lr')}, warmup {t.get('warmup_frac', 0):.0%}, {steps} x batch "
            f"{t.get('batch_size')}{shape}")


def _trial_recipe(raw: dict) -> str:
    """The recipe of a report's trials: its recorded params as a trial of its first point resolves them (the
    task may set its own budget and batch)."""
    params = params_from_dict(raw)
    point = sweep.grid_points(params)[0] if params.sweep.mode == "grid" else \
        {params.task().count_axis: min(params.sweep.instructions), "seed": 0}
    return recipe_line(sweep.trial_params(params, point).dump())


def _multiplicity(verdicts_: list[str]) -> str:
    """How many of the verdicts would land on the wrong side by chance at the reports' confidence."""
    n = len(verdicts_)
    decided = sum(v in (verdicts.REPRODUCED, verdicts.DIFFERS) for v in verdicts_)
    return (f"{n} verdicts ({decided} reproduced or differs), each from a 90% interval: about "
            f"{stats.chance_flips(n, 0.9):.1f} of them would fall on the wrong side by chance alone if each claim "
            "were exactly at its edge, so a single surprising verdict is weak evidence; findings on shared runs "
            "are not independent (a duplicate cites the finding it repeats instead of counting twice).")


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _threshold_row() -> list[str]:
    """The main sweep's threshold (reports/threshold.json, the estimate stage) beside the paper's band (which the
    stage was given, --band), with its verdict."""
    path = REPORTS_DIR / "threshold.json"
    if not path.is_file():
        return []
    est = json.loads(path.read_text())
    if est.get("mode") != "outcomes":
        return _curve_threshold_row(est)
    band = tuple(est.get("paper_band") or ())
    t, lo, hi = est.get("threshold_instructions"), est.get("ci_low"), est.get("ci_high")
    every = est.get("all_runs") or {}
    if t is None:
        ours = f"not located ({est.get('runs')} runs, every one the same outcome)"
        every_text = "-"
    elif lo is None:
        ours = f"I_50 {t:.0f}, no interval ({est.get('seeds')} seed: the interval needs two)"
        every_text = "-"
    else:
        transition = est.get("transition") or {}
        ours = (f"I_50 {t:.0f} ({est['confidence']:.0%} interval {lo:.0f}-{hi:.0f}, high/low {hi / lo:.2f}) from "
                f"the {est['runs_fitted']} runs that learned their rules ({est['seeds']} seeds); runs at each I of "
                "the transition: " + ", ".join(f"{k}: {v}" for k, v in transition.items()))
        every_text = (f"I_50 {every['i50']:.0f} ({every['ci_low']:.0f}-{every['ci_high']:.0f}), {est['runs']} runs, "
                      f"{est['untrained_runs']} untrained" if every.get("ci_low") is not None else "not located")
        cov = est.get("coverage")
        if cov:
            ours += (f"; the interval covered the true I_50 in {cov['coverage']:.0%} of {cov['studies']} simulated "
                     "studies of this design")
    unseen = est.get("mean_unseen_patterns_in_train")
    if unseen is not None:
        ours += f"; {unseen:.1%} of unseen patterns occur in training"
    if band and lo is not None:
        verdict = verdicts.band_verdict(lo, hi, band)
        where = est.get("paper_band_position") or verdicts.band_position(lo, hi, band)
        why = {"inside": f"our interval {lo:.0f}-{hi:.0f} lies inside the paper's {band[0]:g}-{band[1]:g}",
               "containing": f"our interval {lo:.0f}-{hi:.0f} is wider than the paper's whole band "
                             f"{band[0]:g}-{band[1]:g}: it cannot tell",
               "overlapping": f"our interval {lo:.0f}-{hi:.0f} overlaps the paper's {band[0]:g}-{band[1]:g} only in "
                              "part: neither inside nor apart",
               "below": f"our interval {lo:.0f}-{hi:.0f} lies below the paper's {band[0]:g}-{band[1]:g}",
               "above": f"our interval {lo:.0f}-{hi:.0f} lies above the paper's {band[0]:g}-{band[1]:g}"}[where]
    else:
        verdict, why = verdicts.UNTESTABLE, "no interval" if band else "no published band given (--band)"
    paper = f"sharp transition at about {band[0]:g}-{band[1]:g} rules" if band else "-"
    rows = [f"| Generalization to unseen rules appears at a threshold number of rules: I_50, where half the runs "
            f"generalize (`dvc repro`, [figure](sweep/phase_diagram.png), [outcomes](sweep/outcomes.png)) | {ours} | "
            f"{every_text} | {paper} | inside the band | {verdict} | {why}; at this scale and recipe (params.yaml: "
            "train; experiments/recipe.yaml varies it) |"]
    sides = _outcome_sides(est)
    if sides:
        rows.append(sides)
    c = est.get("control")
    if c and c.get("versus_study"):
        v = c["versus_study"]
        ratio = (f"I_50 ratio control/study {v['i50_ratio']:.2f} ({c['confidence']:.0%} interval "
                 f"{v['ratio_low']:.2f}-{v['ratio_high']:.2f})") if v.get("ratio_low") is not None else \
            "I_50 ratio: not located in both arms"
        factor = 1.5
        verdict = verdicts.ratio_verdict(v.get("ratio_low") or math.nan, v.get("ratio_high") or math.nan, factor)
        rows.append(f"| The threshold is about new rules, not new pairings of seen strings (control: {c['arm']}, "
                    f"[figure](sweep/phase_diagram.png)) | {ratio}; paired on {v['pairs']} runs with the same I and "
                    f"seed: {v['first_only']} generalized in the study only, {v['second_only']} in the control only "
                    f"(exact McNemar p = {v['p_value']:.2f}) | control: {c['runs']} runs, {c['seeds']} seeds | the "
                    f"paper's unseen strings are never seen in training | x{factor} | {verdict} | alike when the "
                    f"ratio's whole interval lies within {1 / factor:.2f}-{factor:.2f} (the paper's band is 1.67 wide) |")
    return rows


def _outcome_sides(est: dict) -> str | None:
    """The paper's other half of the claim: well below the threshold (I <= I_50 / 2) no run generalizes, well
    above it (I >= 2 I_50) every run does; judged on the counts, every run included."""
    t = est.get("threshold_instructions")
    table = est.get("by_instructions") or []
    if t is None or not table:
        return None
    x = next(k for k in table[0] if k not in ("runs", "generalized", "untrained"))
    below = [r for r in table if r[x] <= t / 2]
    above = [r for r in table if r[x] >= 2 * t]
    if not below or not above:
        return None
    k_below, n_below = sum(r["generalized"] for r in below), sum(r["runs"] for r in below)
    k_above, n_above = sum(r["generalized"] for r in above), sum(r["runs"] for r in above)
    holds = k_below == 0 and k_above == n_above
    return (f"| Well below the threshold no run generalizes, well above it every run does | I <= {t / 2:.0f} "
            f"(I = {', '.join(str(r[x]) for r in below)}): {k_below} of {n_below} runs generalized; I >= {2 * t:.0f} "
            f"(I = {', '.join(str(r[x]) for r in above)}): {k_above} of {n_above} | (every run counted) | fewer than "
            f"~300 rules never generalize, 1,000 or more always do | none / all | "
            f"{verdicts.REPRODUCED if holds else verdicts.DIFFERS} | "
            f"{'every run' if holds else 'not every run'}, untrained included |")


def _curve_threshold_row(est: dict) -> list[str]:
    """The older estimate (sweep.mode: threshold): the mean curve's crossing, one fit per seed."""
    band = tuple(est.get("paper_band") or (300, 500))
    t = est.get("threshold_instructions")
    if t is None or est.get("ci_low") is None:
        ours = f"not located ({est.get('seeds_located', 0)} of {est.get('seeds')} seeds)"
        lo = hi = math.nan
    else:
        lo, hi = est["ci_low"], est["ci_high"]
        ours = (f"{t:.0f} ({est['confidence']:.0%} interval {lo:.0f}-{hi:.0f}), "
                f"{est['seeds_located']} of {est['seeds']} seeds locate it, {est['runs']} runs, "
                f"{est['untrained_runs']} untrained")
    verdict = verdicts.band_verdict(lo, hi, band)
    return [f"| Generalization to unseen rules appears at a threshold number of rules (`dvc repro`, "
            f"[figure](sweep/phase_diagram.png)) | {ours} | - | sharp transition at about {band[0]:g}-{band[1]:g} "
            f"rules | inside the band | {verdict} | the mean curve's crossing, one fit per seed |"]


def write_index() -> None:
    """reports/index.md: one table of findings (ours with its interval over seeds, the paper's, the verdict and
    why), then every experiment that has a report: its figure, the paper's finding and its points."""
    rows = _threshold_row()
    judged = [r.split(" | ")[-2] for r in rows]
    sections = []
    for name in names():
        out = REPORTS_DIR / name
        if not (out / "report.json").is_file():
            continue
        exp = declaration(name)
        metrics = reports.read(out)
        if exp.recipe:
            sections += _recipe_section(name, exp, metrics)
            continue
        for k, (f, declared) in enumerate(zip(metrics.get("findings", []), exp.findings), 1):
            where = f"[{name}]({name}/figure.png)"
            if declared.same_as:  # the same runs as another finding: cited, not judged (or counted) again
                other, _, n = declared.same_as.partition(":")
                rows.append(f"| {f['claim']} ({where}) | the runs of {other}'s finding {n} | | {f['paper']} | "
                            f"{declared.margin} | (see {other} {n}) | the same runs, judged once there |")
                continue
            judged.append(f["verdict"])
            rows.append(f"| {f['claim']} ({where}) | {_ours(f)} | {_all_runs(f)} | {f['paper']} | "
                        f"{f.get('margin', declared.margin)} | {f['verdict']} | {f['why']} |")
        untrained = metrics.get("untrained")
        record = out / "params.yaml"
        recipe = f" Recipe: {_trial_recipe(yaml.safe_load(record.read_text()))}." if record.is_file() else ""
        sections += [f"## {exp.title}", "", f"`dvc repro {stage(name)}`: "
                     f"{metrics['trials']} training runs"
                     + (f" ({untrained} untrained: left out of means and verdicts)" if untrained is not None else "")
                     + f", {metrics['training_minutes']} minutes of training.{recipe}", "",
                     f"![{name}]({name}/figure.png)", "", f"**Paper:** {' '.join(exp.paper.split())}", ""]
        if "table" in metrics:
            sections += [f"Ours / paper ({_table_metric(name, exp, metrics)}):", "", metrics["table"], ""]
        # a null axis value as params.yaml writes it; a mean over no trained seed as a dash
        table = pd.DataFrame(metrics["points"])
        for axis in {exp.x, exp.series, exp.panel} & set(table):
            table[axis] = table[axis].map(lambda v: "null" if v is None or v != v else v)
        # (tabulate's missingval replaces None, not a float column's NaN)
        sections += [table.astype(object).where(table.notna(), None).to_markdown(index=False, missingval="-"), ""]
    lines = ["# Results", "", "Generated by `instdiv estimate` and `instdiv experiment`. A run counts only when its "
             "model learned its training rules (seen accuracy >= evaluate.learned_at); intervals come from the "
             "seeds (Student t over per-seed values).", "",
             f"{_multiplicity(judged)}", "",
             "Every finding holds for the training recipe its runs used (each experiment's section names it; the "
             "default study's is params.yaml's train and model sections); the recipe experiment measures how the "
             "threshold moves with it.", "",
             "| finding | ours (runs that learned their rules) | all runs | paper | margin | verdict | why |",
             "|---|---|---|---|---|---|---|", *rows, "", *sections]
    (REPORTS_DIR / "index.md").write_text("\n".join(lines))
    reports.gather(REPORTS_DIR)
