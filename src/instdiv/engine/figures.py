"""The threshold's figures: the phase diagram (runs coloured by seed, the share that generalized at each I,
the fitted probability with its band, I_50, the paper's band, the control beside), the per-run outcome
histograms, the older mean-curve diagram (sweep.mode: threshold) and the heatmap of two axes. Drawing only:
the numbers come in, computed by engine/stats.py through engine/estimate.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from instdiv.engine import stats
from instdiv.engine.stats import logistic, mean_interval


def _per_point(done: pd.DataFrame, x: str, metric: str, confidence: float) -> pd.DataFrame:
    """Mean over seeds at each I with its Student t interval (the seeds' own spread)."""
    rows = []
    for value, runs in done.groupby(x):
        mean, _, high = mean_interval(runs[metric].to_numpy(float), confidence)
        rows.append({x: value, "mean": mean, "half": high - mean, "n": len(runs)})
    return pd.DataFrame(rows)


def phase_diagram(done: pd.DataFrame, est: dict, metric: str, x: str, x_label: str, seen: str | None,
                  path: Path, pruned: pd.DataFrame | None = None, control: tuple | None = None) -> None:
    """The metric against I on a log axis: every seed's run (hollow where the model did not learn its training
    instructions), the mean over trained seeds with its interval, the pooled fit, the threshold and its
    interval over seeds; beside them the score on the training instructions (`seen`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 4.6), dpi=120)
    learned = done["learned"].astype(bool) if "learned" in done else pd.Series(True, index=done.index)
    if seen in done:
        ax.scatter(done[x], done[seen], marker="s", s=18, color="tab:gray", alpha=0.6,
                   label=f"seen instructions ({seen}), each run")
    ax.scatter(done.loc[learned, x], done.loc[learned, metric], s=22, color="tab:blue", alpha=0.55, zorder=3,
               label=f"unseen instructions ({metric}), each seed")
    if (~learned).any():
        ax.scatter(done.loc[~learned, x], done.loc[~learned, metric], s=30, facecolors="none",
                   edgecolors="tab:red", zorder=3, label=f"untrained runs ({(~learned).sum()}, left out)")
    means = _per_point(done[learned], x, metric, est["confidence"])
    if len(means):
        ax.errorbar(means[x], means["mean"], yerr=means["half"].fillna(0), fmt="D", ms=5, color="navy", capsize=3,
                    zorder=4, label=f"mean over seeds, {est['confidence']:.0%} interval")
    if pruned is not None and len(pruned) and "last_validation" in pruned:
        ax.scatter(pruned[x], pruned["last_validation"], marker="x", color="tab:red", zorder=3,
                   label="pruned trials (last validation score)")
    if est["fit"]:
        f = est["fit"]
        grid = np.geomspace(done[x].min(), done[x].max(), 200)
        ax.plot(grid, logistic(np.log(grid), f["plateau"], f["steepness"], f["midpoint_log_i"]),
                color="tab:blue", lw=1, label="logistic fit (all trained runs)")
    if control is not None:
        runs, c = control
        trained = runs[runs["learned"]]
        means = _per_point(trained, x, metric, c["confidence"])
        ax.errorbar(means[x], means["mean"], yerr=means["half"].fillna(0), fmt="s--", ms=4, color="tab:green",
                    capsize=3, zorder=4, label=f"control: {c['arm']} (mean over seeds)")
        ct = c["threshold_instructions"]
        if ct is not None and math.isfinite(ct):
            ci = f", {c['ci_low']:.0f}-{c['ci_high']:.0f}" if math.isfinite(c["ci_low"]) else ""
            ax.axvline(ct, color="tab:green", ls="--", lw=1, label=f"control threshold {ct:.0f}{ci}")
    t = est["threshold_instructions"]
    if t is not None and math.isfinite(t):
        if est["ci_low"] is not None and math.isfinite(est["ci_low"]):
            ax.axvspan(est["ci_low"], est["ci_high"], color="tab:orange", alpha=0.2,
                       label=f"{est['confidence']:.0%} interval over {est['seeds_located']} seeds "
                             f"{est['ci_low']:.0f}-{est['ci_high']:.0f}")
        ax.axvline(t, color="tab:orange", label=f"threshold {t:.0f} ({est['target_fraction_of_plateau']:.0%} of "
                                                f"the plateau)")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{x_label} (log scale)")
    ax.set_ylabel("exact-match accuracy" if "accuracy" in metric else metric.replace("_", " "))
    ax.set_title(f"Generalization to unseen instructions ({len(done)} runs, {est['seeds']} seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def heatmap(done: pd.DataFrame, metric: str, axes: list[str], x: str, x_label: str, path: Path) -> None:
    """Mean metric over I x the first other axis that varies (S, skew, ...), when the study spans two."""
    second = next((a for a in axes if a in done and done[a].nunique() > 1), None)
    if second is None:
        path.unlink(missing_ok=True)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = done.pivot_table(index=second, columns=x, values=metric, aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * table.shape[1], 1.2 + 0.5 * table.shape[0]), dpi=120)
    im = ax.imshow(table.values, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    for (r, c), v in np.ndenumerate(table.values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(second.replace("_", " "))
    ax.set_title(metric.replace("_", " "))
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _runs_by_seed(ax, runs: pd.DataFrame, x: str, metric: str) -> None:
    """Each run as a dot coloured by its seed (hollow: it did not learn its training rules), spread a little
    along x so that runs at one I do not hide each other."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    top = max(1, int(runs["seed"].max())) if len(runs) else 1
    for i, group in runs.groupby(x):
        n = len(group)
        offsets = np.exp((np.arange(n) - (n - 1) / 2) * 0.012)
        for off, row in zip(offsets, group.sort_values("seed").to_dict("records")):
            color = cmap(row["seed"] / top)
            kw = {"color": color} if row["learned"] else {"facecolors": "none", "edgecolors": color}
            ax.scatter(i * off, row[metric], s=16, alpha=0.85, zorder=3, **kw)


def outcome_diagram(done: pd.DataFrame, est: dict, metric: str, x: str, x_label: str, seen: str | None,
                    path: Path, control: tuple | None = None, band: tuple[float, float] | None = None) -> None:
    """The phase diagram: every run coloured by seed, the share of runs that generalized at each I, the fitted
    probability of generalizing with the band its I_50 interval spans, I_50, and the paper's band; the control
    arm in a panel beside it, drawn the same way (points and its curve, no error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("study", done, est)] + ([("control: " + control[1]["arm"], control[0], control[1])] if control else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 2.4, 4.8), dpi=120, squeeze=False,
                             sharey=True)
    lo_x = min(float(p[1][x].min()) for p in panels) / 1.3
    hi_x = max(float(p[1][x].max()) for p in panels) * 1.3
    grid = np.geomspace(lo_x, hi_x, 300)
    for ax, (title, runs, e) in zip(axes[0], panels):
        runs = runs.copy()
        runs["learned"] = runs["learned"].astype(bool) if "learned" in runs else True
        runs["seed"] = runs["seed"] if "seed" in runs else 0
        if band:
            ax.axvspan(*band, color="0.85", zorder=0, label=f"paper: {band[0]:g}-{band[1]:g}")
        token = f"{metric.removesuffix('accuracy')}token_accuracy"
        if token in runs and runs[token].notna().any():
            ax.scatter(runs[x], runs[token], marker="x", s=12, color="0.55", zorder=2,
                       label=f"{token.replace('_', ' ')} (each run)")
        _runs_by_seed(ax, runs, x, metric)
        shares = pd.DataFrame(e.get("by_instructions", []))
        if len(shares):
            share = shares["generalized"] / shares["runs"]
            ax.scatter(shares[x], share, marker="D", s=34, color="black", zorder=4,
                       label="share of runs that generalized")
            for i, k, n in zip(shares[x], shares["generalized"], shares["runs"]):
                ax.annotate(f"{k}/{n}", (i, -0.07), ha="center", fontsize=6.5, annotation_clip=False)
        t, lo, hi = e.get("threshold_instructions"), e.get("ci_low"), e.get("ci_high")
        slope = e.get("slope")
        if t is not None and math.isfinite(t) and slope is not None:
            ax.plot(grid, stats.probability_curve(t, slope, grid), color="tab:red", lw=1.5, zorder=4,
                    label="fitted P(generalized)")
            if lo is not None and math.isfinite(lo):
                low_c, high_c = (stats.probability_curve(v, slope, grid) for v in (hi, lo))
                ax.fill_between(grid, low_c, high_c, color="tab:red", alpha=0.15, zorder=1,
                                label=f"I_50 {e['confidence']:.0%} interval {lo:.0f}-{hi:.0f}")
            ax.axvline(t, color="tab:red", ls="--", lw=1, label=f"I_50 = {t:.0f}")
        ax.set_xscale("log")
        ax.set_xlim(lo_x, hi_x)
        ax.set_ylim(-0.1, 1.03)
        ax.set_xlabel(f"{x_label} (log scale)")
        n_seeds = int(runs["seed"].nunique())
        ax.set_title(f"{title}: {len(runs)} runs, {n_seeds} seeds, {int((~runs['learned']).sum())} untrained",
                     fontsize=9)
    axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} (dots: runs, colour: seed) / probability")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="", marker="o", mfc="none", mec="0.4"))
    labels.append("hollow: did not learn its training rules")
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(f"Generalization to unseen instructions: each run generalizes or not ({est.get('outcome', '')})",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.02, 1 - 2.4 / (6.2 * len(panels) + 2.4), 0.95))
    fig.savefig(path)
    plt.close(fig)


def outcome_histogram(done: pd.DataFrame, est: dict, metric: str, x: str, seen: str | None, path: Path) -> None:
    """Per-run unseen score as a share of the run's own seen score, a histogram per I: bimodal when runs
    memorize or generalize; the cut that decides the outcome is drawn, so its choice can be judged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = done[seen].clip(lower=1e-9) if seen and seen in done else 1.0
    ratio = (done[metric] / own).clip(0, 1.05)
    values = sorted(done[x].unique())
    fig, axes = plt.subplots(len(values), 1, figsize=(6.0, 0.9 + 0.7 * len(values)), dpi=120, sharex=True,
                             squeeze=False)
    bins = np.linspace(0, 1.05, 22)
    for ax, i in zip(axes[:, 0], values):
        ax.hist(ratio[done[x] == i], bins=bins, color="tab:blue")
        ax.axvline(est.get("cut", 0.5), color="tab:red", lw=1)
        ax.set_ylabel(f"{int(i)}", rotation=0, ha="right", va="center", fontsize=8)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel(f"{metric.replace('_', ' ')} / the run's own {seen or 'plateau'} (red: the cut)")
    fig.suptitle("Runs per I (rows): memorize (left) or generalize (right)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
