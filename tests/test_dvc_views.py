"""What a DVC user reads: metrics files of numbers, experiment params that are knobs, plots declared once with
their axes, and the `dvc plots show` page rendered in a real browser (slow: headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DVC_FILES = [REPO / "dvc.yaml", REPO / "experiments/dvc.yaml"]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}
DVC = str(Path(sys.executable).parent / "dvc")


def declared_plots() -> dict[str, dict]:
    """Top-level plots of every dvc.yaml: path (from the repository root) -> its properties."""
    out = {}
    for f in DVC_FILES:
        for entry in yaml.safe_load(f.read_text()).get("plots", []):
            path, props = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            out[os.path.normpath(os.path.relpath(f.parent / path, REPO))] = props or {}
    return out


def stages(f: Path) -> dict:
    return yaml.safe_load(f.read_text())["stages"]


def test_plots_are_declared_once_with_their_axes():
    plots = declared_plots()
    for f in DVC_FILES:  # no stage draws a plot of its own: DVC would draw it twice
        for name, stage in stages(f).items():
            body = stage.get("do", stage)
            assert "plots" not in body, f"{f.name}: stage {name} declares plots; declare them at the top level"
    for path, props in plots.items():
        if path.endswith(".csv"):
            assert {"x", "y", "title"} <= set(props), path
        else:
            assert path.endswith(".png") and not props, path  # figures: image plots
    for name in ("examples", "noop", "skew", "families", "encrypted", "code_sweep", "pretrained"):
        exp = yaml.safe_load((REPO / f"experiments/{name}.yaml").read_text())
        props = plots[f"reports/{name}/points.csv"]
        assert props["x"] == exp["x"]
        assert props["y"] == (exp.get("metrics") or ["pass_at_1" if name == "code_sweep" else "unseen_op_accuracy"])[0]
        assert f"reports/{name}/figure.png" in plots


def test_experiments_declare_only_their_knobs_as_params():
    """The declarations' prose (titles, the paper's findings) is a dep, not params: `dvc exp show` lists each
    experiment's scale and weights from experiments/params.yaml and params.yaml's sections."""
    for name, stage in stages(REPO / "experiments/dvc.yaml").items():
        body = stage.get("do", stage)
        for entry in body.get("params", []):
            files = entry if isinstance(entry, dict) else {"params.yaml": [entry]}
            for file in files:
                assert file in ("params.yaml", "experiments/params.yaml"), (name, file)
            if "experiments/params.yaml" in files:
                # the experiment's name: a foreach list's item, a foreach mapping's key (experiment -> base), or
                # the stage's own name (recipe)
                var = "${key}" if isinstance(stage.get("foreach"), dict) else "${item}" if "foreach" in stage \
                    else name
                assert files["experiments/params.yaml"] == [var]
                assert f"experiments/{var}.yaml" in body["deps"]  # any edit of the declaration reruns it
    out = subprocess.run([DVC, "exp", "show", "--no-pager", "--csv"], cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=300)
    columns = out.stdout.splitlines()[0].split(",")
    prose = [c for c in columns if c.startswith("experiments/") and ":" in c
             and not c.startswith("experiments/params.yaml:")]
    assert not prose, prose  # (a declaration itself is a dep column: its hash)
    assert {"noop.scale", "noop.weights"} <= {c.removeprefix("experiments/params.yaml:") for c in columns}


def test_metrics_files_hold_numbers_only_and_none_is_missing():
    """Every metrics file DVC reads holds numbers only, and `dvc metrics show` (no arguments, what users type)
    finds every one: experiments not run yet have no file to miss (reports/experiments.json gathers those
    that have run)."""
    declared = []
    for f in DVC_FILES:
        body = yaml.safe_load(f.read_text())
        declared += [os.path.relpath(f.parent / m, REPO) for m in body.get("metrics", [])]
        for stage in body["stages"].values():
            for entry in stage.get("do", stage).get("metrics", []):
                declared.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    assert "reports/sweep/metrics.json" in declared and "reports/experiments.json" in declared
    paths = [REPO / os.path.normpath(d) for d in declared]
    assert all("$" not in str(p) for p in paths), "a templated metrics file goes missing until its stage runs"
    assert all(p.is_file() for p in paths), [str(p) for p in paths if not p.is_file()]

    def leaves(d):
        for v in d.values():
            yield from leaves(v) if isinstance(v, dict) else [v]

    for path in [*paths, *REPO.glob("reports/*/metrics.json")]:
        values = list(leaves(json.loads(path.read_text())))
        bad = [v for v in values if not (v is None or isinstance(v, (int, float)))]
        assert not bad, f"{path.relative_to(REPO)} holds {bad[:3]}"
    out = subprocess.run([DVC, "metrics", "show"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "failed" not in out.stderr + out.stdout, out.stderr
    assert "experiments.json" in out.stdout and "noop.trials" in out.stdout


def _vega_dir() -> Path:
    return Path(os.environ.get("INSTDIV_VEGA_DIR") or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "instdiv/vega")


@pytest.mark.slow
def test_the_plots_page_renders_every_plot_with_its_data_and_axes(tmp_path):
    """`dvc plots show` as a user opens it: the page rendered by headless Chromium (the Vega scripts it names
    served from the local copy scripts/ensure-browser.sh fetched); every declared plot whose data exists is
    drawn with marks and the declared axes, every figure is on the page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    vega = _vega_dir()
    assert browser and (vega / "vega-embed.min.js").is_file(), "run scripts/ensure-browser.sh (make test-all does)"
    subprocess.run([DVC, "plots", "show", "-o", str(tmp_path / "plots")], cwd=REPO, env=ENV, check=True,
                   capture_output=True, timeout=300)
    page = (tmp_path / "plots/index.html").read_text()
    for pkg, version in (("vega", "5.20.2"), ("vega-lite", "5.2.0"), ("vega-embed", "6.18.2")):
        cdn = f"https://cdn.jsdelivr.net/npm/{pkg}@{version}"
        assert cdn in page  # the page names these exact files: the local copies stand in for them
        page = page.replace(cdn, (vega / f"{pkg}.min.js").as_uri())
    page = page.replace(", spec);", ", spec, {renderer: 'svg'});")  # SVG: the drawing can be read back
    local = tmp_path / "plots/local.html"
    local.write_text(page)
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=30000", "--dump-dom", local.as_uri()], capture_output=True,
                         text=True, timeout=180).stdout
    parts = re.split(r'<div id="([^"]+)"', dom)
    drawn = dict(zip(parts[1::2], parts[2::2]))
    checked = 0
    for path, props in declared_plots().items():
        if not (REPO / path).is_file():
            continue  # an experiment not run yet has nothing to draw
        key = re.sub(r"[/.]", "_", path)
        assert key in drawn, f"{path} is not on the page"
        body = drawn[key]
        if path.endswith(".png"):
            assert (tmp_path / "plots/static" / f"workspace_{key.removesuffix('_png')}.png").is_file(), path
            continue
        titles = re.findall(r"role-axis-title.*?<text[^>]*>([^<]*)</text>", body)
        legend = re.findall(r"role-legend-label.*?<text[^>]*>([^<]*)</text>", body)
        marks = re.findall(r'<path[^>]*d="M', body)
        ys = props["y"] if isinstance(props["y"], list) else [props["y"]]
        assert titles[:1] == [props["x"]], (path, titles)
        assert titles[1] == ys[0] if len(ys) == 1 else set(ys) <= set(legend), (path, titles, legend)
        assert len(marks) >= 2, (path, "no data drawn")
        checked += 1
    assert checked >= 4  # the default pipeline's four plots at least
