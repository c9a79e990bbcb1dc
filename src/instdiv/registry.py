"""Finds the tasks and model families: every module of the `instdiv.tasks` and `instdiv.models` packages that
exposes `TASK` or `FAMILY`. The engine looks them up here by the names params.yaml gives, and so never
imports a task's or a model's module itself.

Both packages extend over `sys.path` (`pkgutil.extend_path`), so a task or family can also live outside this
repository: put `instdiv/tasks/<name>.py` (or a package) in any directory on PYTHONPATH.
"""

from __future__ import annotations

import importlib
import pkgutil

from instdiv.errors import ConfigError


def _discover(package: str, attribute: str) -> dict:
    pkg = importlib.import_module(package)
    pkg.__path__ = pkgutil.extend_path(list(pkg.__path__), package)  # directories added to sys.path since
    found = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        obj = getattr(module, attribute, None)
        if obj is not None:
            key = obj.name if attribute == "TASK" else obj.kind
            found[key] = obj
    return found


def tasks() -> dict:
    """name -> Task, for every task package."""
    return _discover("instdiv.tasks", "TASK")


def families() -> dict:
    """kind -> ModelFamily, for every model family."""
    return _discover("instdiv.models", "FAMILY")


def task(name: str, key: str = "--task"):
    known = tasks()
    if name not in known:
        raise ConfigError(f"{key}: unknown task '{name}'; known: {', '.join(known)} (a new task is one package "
                          "under instdiv/tasks)")
    return known[name]


def family(kind: str):
    known = families()
    if kind not in known:
        raise ConfigError(f"model.kind: unknown model kind '{kind}'; known: {', '.join(known)} (a new kind is "
                          "one module under instdiv/models)")
    return known[kind]
