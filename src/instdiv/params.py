"""The whole of params.yaml as one validated object: the engine's sections (instdiv/config.py), every task's
sections and the `model` section of the family `model.kind` names.

A section left out takes its defaults, a key left out its default; unknown sections and keys are errors.
Rules across sections (what the sweep's task measures, which keys its axes may vary) are checked here.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, create_model, field_validator

from instdiv import registry
from instdiv.config import ENGINE_SECTIONS, Section, check_type, parse, reject_unknown
from instdiv.errors import ConfigError

DEFAULT_KIND = "gpt"  # model.kind when params.yaml leaves it out


class ParamsBase(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, protected_namespaces=())

    @field_validator("model", mode="before", check_fields=False)
    @classmethod
    def _model_section(cls, raw: Any):
        if isinstance(raw, Section):
            return raw
        raw = dict(raw or {})
        return parse(registry.family(raw.setdefault("kind", DEFAULT_KIND)).Config, raw, "model")

    def replace(self, **sections) -> "ParamsBase":
        """A copy with whole sections replaced (already validated sections)."""
        return params_from_dict({**self.sections(), **sections})

    def sections(self) -> dict[str, Section]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def dump(self) -> dict:
        """Plain data: what a params file holds, what worker processes rebuild the params from."""
        return {name: section.model_dump() for name, section in self.sections().items()}

    def task(self):
        """The sweep's task."""
        return registry.task(self.sweep.task, "sweep.task")


@functools.cache
def _params_model(task_sections: tuple[tuple[str, type[Section]], ...]) -> type[ParamsBase]:
    fields: dict[str, Any] = {name: (cls, Field(default_factory=cls)) for name, cls in task_sections}
    default_model = registry.family(DEFAULT_KIND).Config
    fields["model"] = (SerializeAsAny[Section], Field(default_factory=default_model))
    fields.update({name: (cls, Field(default_factory=cls)) for name, cls in ENGINE_SECTIONS.items()})
    return create_model("Params", __base__=ParamsBase, **fields)


def params_type() -> type[ParamsBase]:
    sections = []
    for task in registry.tasks().values():
        sections += [(name, cls) for name, cls in task.sections.items() if (name, cls) not in sections]
    return _params_model(tuple(sections))


Params = ParamsBase  # the type to annotate with; instances are of params_type()


def load_params(path: str | Path = "params.yaml") -> ParamsBase:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file's syntax") from None
    return params_from_dict(raw or {}, source=str(path))


def params_from_dict(raw: dict[str, Any], source: str = "params") -> ParamsBase:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    cls = params_type()
    reject_unknown(raw, list(cls.model_fields), source)
    built = {}
    for name, field in cls.model_fields.items():
        value = raw.get(name, {})
        if isinstance(value, Section) or name == "model":
            built[name] = value
        elif field.annotation is not None:
            built[name] = parse(field.annotation, value if value is not None else {}, name)
    params = cls(**built)
    check_sweep(params)
    return params


def check_sweep(params: ParamsBase) -> None:
    """sweep.metric must be measured by sweep.task, and sweep.axes must name keys of that task."""
    import difflib

    s = params.sweep
    task = params.task()
    if s.metric not in task.metrics:
        raise ConfigError(f"sweep.metric={s.metric} is not measured by task {s.task}; choose one of "
                          f"{', '.join(task.metrics)}")
    hints = task.axis_types()
    sections = params.sections()
    for key, values in s.axes.items():
        if key == task.count_axis:
            raise ConfigError(f"sweep.axes: '{key}' has its own setting: sweep.instructions and sweep.seeds")
        if "." in key:  # another section's key, set as it is in each trial (model.init, train.lr)
            section, name = key.split(".", 1)
            if section not in sections or section in ("sweep", "tracking"):
                raise ConfigError(f"sweep.axes: '{key}': '{section}' is not a section an axis can vary; use "
                                  f"<section>.<key> with one of {', '.join(n for n in sections if n not in ('sweep', 'tracking'))}")
            fields = type(sections[section]).model_fields
            if name not in fields:
                raise ConfigError(f"sweep.axes: '{key}': {section} has no key '{name}'")
            for value in values:
                check_type(value, fields[name].annotation, f"sweep.axes.{key}")
            continue
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"sweep.axes: '{key}' is not a {s.task} key an axis can vary{hint}")
        for value in values:
            check_type(value, hints[key], f"sweep.axes.{key}")
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"sweep.axes.{key}={values} lists a value twice")
