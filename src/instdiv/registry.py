"""Finds the tasks and model families: every module of the `instdiv.tasks` and `instdiv.models` packages that
exposes `TASK` or `FAMILY`. The engine looks them up here by the names params.yaml gives, and so never
imports a task's or a model's module itself.

Both packages extend over `sys.path`, so a task or family can also live outside this repository: put
`instdiv/tasks/<name>.py` (or a package) in any directory on PYTHONPATH.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import sys

from instdiv.errors import ConfigError


def modules(package: str):
    """Every module of the package, on its own path and on sys.path."""
    pkg = importlib.import_module(package)
    own = os.path.dirname(pkg.__file__)
    found = [own]  # rebuilt on every call: directories join and leave sys.path
    for entry in sys.path:
        folder = os.path.join(entry or os.getcwd(), *package.split("."))
        if os.path.isdir(folder) and os.path.realpath(folder) not in map(os.path.realpath, found):
            found.append(folder)
    pkg.__path__[:] = found
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{package}.{info.name}")


def _discover(package: str, attribute: str) -> dict:
    return dict(_discovered(package, attribute, tuple(sys.path)))


@functools.lru_cache(maxsize=None)
def _discovered(package: str, attribute: str, path: tuple[str, ...]) -> tuple:
    """Found once per sys.path: params are assembled and tasks looked up many times per sweep."""
    found = {}
    for module in modules(package):
        obj = getattr(module, attribute, None)
        if obj is not None:
            key = obj.name if attribute == "TASK" else obj.kind
            found[key] = obj
    return tuple(found.items())


def tasks() -> dict:
    """name -> Task, for every task package."""
    return _discover("instdiv.tasks", "TASK")


def families() -> dict:
    """kind -> ModelFamily, for every model family."""
    return _discover("instdiv.models", "FAMILY")


def commands() -> list:
    """The functions that register a task's own CLI commands: `register_commands(app)` in its module."""
    return [m.register_commands for m in modules("instdiv.tasks") if hasattr(m, "register_commands")]


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
