"""Time to learn the training rules, per recipe: the steps and seconds of training until a run's validation
score on its training rules first reaches evaluate.learned_at (every run records them: steps_to_learn,
seconds_to_learn), at I in {128, 256, 1024} x seeds 0-2.

    python benchmarks/time_to_learn.py                     # read: the default study and the recipe studies
    python benchmarks/time_to_learn.py --train RECIPE ...  # train the grid for these recipes first, e.g.
        --train reference "train.warmup_frac=0.2" "train.optimizer=muon" "train.lr=0.006,train.warmup_frac=0.2"

Reading costs nothing: the runs of the default study (studies/rewrite.journal) and of the recipe experiment
(studies/exp-recipe.journal) at those I and seeds are tabulated by recipe. --train runs the missing ones as a
grid study per recipe (studies/bench-time-to-learn.journal: it resumes), two worker processes on 2 cores
(9 runs a recipe, about 20 minutes on 2 cores at the default budget). A run that never learned counts as
not learned (its steps are not averaged in). Figures are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml

from instdiv.engine import sweep
from instdiv.engine import tracking
from instdiv.params import load_params

POINTS, SEEDS = [128, 256, 1024], [0, 1, 2]


def recipe_params(base, recipe: str):
    """params with a recipe's overrides ("reference", or "section.key=value[,section.key=value]")."""
    p = base
    if recipe != "reference":
        for item in recipe.split(","):
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            p = p.replace(**{section: getattr(p, section).replace(**{name: yaml.safe_load(value)})})
    return p


def journal_runs(path: Path) -> pd.DataFrame:
    """Every completed trial of every study in a journal, with its study's recipe settings."""
    if not path.is_file():
        return pd.DataFrame()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        label = recipe_label(study.user_attrs)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if "steps_to_learn" not in t.user_attrs:  # trained before runs recorded it (None: never learned)
                continue
            rows.append({"study": summary.study_name, "recipe": label, **t.params, **t.user_attrs})
    return pd.DataFrame(rows)


def recipe_label(attrs: dict) -> str:
    """How a study's recipe differs from params.yaml's (its train.* and model.* attributes); a study made
    before studies recorded their recipe is taken as params.yaml's."""
    base = tracking.flatten({"train": load_params("params.yaml").train.model_dump(),
                             "model": load_params("params.yaml").model.model_dump()})
    changed = [f"{k}={v}" for k, v in attrs.items() if k in base and base[k] != v and k.split(".")[-1] != "seed"]
    return ", ".join(changed) or "reference (params.yaml)"


def train(base, recipes: list[str]) -> None:
    for recipe in recipes:
        p = recipe_params(base, recipe)
        p = p.replace(sweep=p.sweep.replace(mode="grid", instructions=POINTS, seeds=SEEDS, axes={}, workers=2,
                                            study="bench-time-to-learn",
                                            storage="journal:studies/bench-time-to-learn.journal"))
        print(f"{recipe}: study {sweep.study_name(p)}", flush=True)
        sweep.run(p, Path(tempfile.gettempdir()) / f"time-to-learn-{sweep.study_name(p)}.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", nargs="*", default=None, help="recipes to train first (see the module's doc)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    base = load_params("params.yaml")
    if args.train:
        train(base, args.train)
    runs = pd.concat([journal_runs(Path(f"studies/{name}.journal"))
                      for name in ("rewrite", "exp-recipe", "bench-time-to-learn")], ignore_index=True)
    if not len(runs) or "steps_to_learn" not in runs:
        print("no run records its time to learn yet (runs trained before it was recorded do not)")
        return
    runs = runs[runs["n_instructions"].isin(POINTS) & runs["seed"].isin(SEEDS)]
    table = []
    for settings, group in runs.groupby("recipe"):
        for i, at_i in group.groupby("n_instructions"):
            learned = at_i["steps_to_learn"].notna()
            table.append({"recipe": settings, "n_instructions": int(i), "runs": len(at_i),
                          "learned": int(learned.sum()),
                          "median_steps": float(np.median(at_i.loc[learned, "steps_to_learn"])) if learned.any()
                          else math.nan,
                          "median_seconds": float(np.median(at_i.loc[learned, "seconds_to_learn"]))
                          if learned.any() else math.nan})
    frame = pd.DataFrame(table).sort_values(["recipe", "n_instructions"])
    print(frame.to_markdown(index=False))
    if args.json:
        args.json.write_text(json.dumps(frame.replace({np.nan: None}).to_dict("records"), indent=2) + "\n")


if __name__ == "__main__":
    main()
