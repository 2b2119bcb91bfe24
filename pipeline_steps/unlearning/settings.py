"""An unlearning job's settings: the shared loop's and its method's own, resolved from the config.

The config's ``unlearn`` block has the methods to run, ``shared`` settings, and one optional block
per method::

    unlearn:
      methods: [ga, ga_diff, npo]
      shared: {epochs: 2, batch_size: 4, learning_rate: 3.0e-4, retain_weight: 1.0}
      npo: {beta: 0.4, learning_rate: 1.0e-4}

A method's settings are the loop's (``UnlearnSettings``) and its own hyper-parameters
(``Method.Hyperparameters``): each from the method's block, else from ``shared`` (a shared
hyper-parameter applies to every method that has one of that name), else its default. A job is
handed only its own method's settings, so changing ``npo.beta`` reruns NPO's jobs and no other's.

Any setting may be a list, a sweep axis: ``learning_rate: [3.0e-4, 1.0e-3]`` in ``shared`` sweeps
every method, in ``npo`` only NPO. A method runs once per point of the cartesian product of its
axes (``sweep_points``), each its own job; the first value of every axis is the method's
*protocol point*, the shared setting of the paper's table. Each element is checked against the
setting's bounds, as a single value is.

A method that takes no gradient step (``manu``, which prunes) has no loop settings: the shared
ones do not reach it (a learning-rate axis does not multiply its jobs), and its own block may set
only its hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from dataclasses import dataclass
from typing import Iterable

from ..training.settings import LoopSettings

from .methods import REGISTRY, Method, get_method

JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string",
              "float | None": ["number", "null"]}


@dataclass(frozen=True)
class UnlearnSettings(LoopSettings):
    """The shared loop's settings as unlearning uses them: every method alike, a constant learning
    rate unless ``warmup_ratio`` is set, a log line every step.

    ``lora_r`` > 0 trains LoRA adapters of that rank (``lora_alpha``, ``lora_dropout``) on the
    linear layers the method would train, merged into the weights when the run ends
    (``training/adapters.py``); 0 trains the weights themselves. A method that acts on the weights'
    own entries refuses it (``Method.lora_refusal``)."""

    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05


# Bounds of the loop's settings (the methods declare theirs on their fields).
LOOP_BOUNDS = {"epochs": {"minimum": 1}, "batch_size": {"minimum": 1}, "learning_rate": {"exclusiveMinimum": 0},
               "weight_decay": {"minimum": 0}, "max_grad_norm": {"exclusiveMinimum": 0}, "log_every": {"minimum": 1},
               "warmup_ratio": {"minimum": 0, "maximum": 1}, "lora_r": {"minimum": 0},
               "lora_alpha": {"exclusiveMinimum": 0}, "lora_dropout": {"minimum": 0, "exclusiveMaximum": 1}}


def loop_fields(method: Method | None = None) -> tuple[dataclasses.Field, ...]:
    """The loop's settings (of ``method``: none for a method that takes no gradient step)."""
    return dataclasses.fields(UnlearnSettings) if method is None or method.trains else ()


def _schema(field: dataclasses.Field, bounds: dict) -> dict:
    """One value, or a sweep axis: a non-empty list of distinct values. JSON schema applies the
    numeric bounds to numbers and ``items`` to arrays only, so one schema checks both, element by
    element, and a wrong type is reported as such ("'high' is not of type 'number', 'array'"); a
    string setting's ``enum`` is held to single values by ``if``/``then``."""
    kinds = JSON_TYPES[field.type]
    value = {"type": kinds, **bounds}
    schema = {**value, "type": [*([kinds] if isinstance(kinds, str) else kinds), "array"],
              "items": value, "minItems": 1, "uniqueItems": True}
    if "enum" in schema:  # unlike the numeric bounds, an enum applies to arrays too: single values only
        schema["if"], schema["then"] = {"not": {"type": "array"}}, {"enum": schema.pop("enum")}
    if "description" in field.metadata:
        schema["description"] = field.metadata["description"]
    return schema


def _hyperparameter_schema(field: dataclasses.Field) -> dict:
    return _schema(field, {k: v for k, v in field.metadata.items() if k != "description"})


def method_block_schema(method: Method) -> dict:
    """JSON schema of one method's block in the config: the loop's settings (if it trains) and its own."""
    properties = {f.name: _schema(f, LOOP_BOUNDS.get(f.name, {})) for f in loop_fields(method)}
    properties |= {f.name: _hyperparameter_schema(f) for f in method.hyperparameter_fields()}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def shared_block_schema() -> dict:
    """JSON schema of ``unlearn.shared``: the loop's settings and any method's hyper-parameter."""
    properties = {f.name: _schema(f, LOOP_BOUNDS.get(f.name, {})) for f in loop_fields()}
    for method in REGISTRY.values():
        properties |= {f.name: _hyperparameter_schema(f) for f in method.hyperparameter_fields()}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def unlearn_block_schema() -> dict:
    """JSON schema of an experiment's ``unlearn`` block, built from the method registry."""
    return {
        "type": "object", "additionalProperties": False, "required": ["methods", "shared"],
        "properties": {
            "methods": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": sorted(REGISTRY)}},
            "shared": shared_block_schema(),
            **{name: method_block_schema(method) for name, method in REGISTRY.items()},
        },
    }


def resolve(method_name: str, unlearn_block: dict) -> dict[str, dict]:
    """``{"loop": {...}, "hyperparameters": {...}}`` of one method: every field, with its value (a
    list for a sweep axis; ``sweep_points`` expands them)."""
    method = get_method(method_name)
    own, shared = unlearn_block.get(method_name, {}), unlearn_block.get("shared", {})

    def value(field: dataclasses.Field):
        for source in (own, shared):
            if field.name in source:
                return source[field.name]
        if field.default is dataclasses.MISSING:
            raise ValueError(f"unlearning setting '{field.name}' of method '{method_name}' has no default; "
                             f"set it under unlearn.shared or unlearn.{method_name}")
        return field.default

    return {"loop": {f.name: value(f) for f in loop_fields(method)},
            "hyperparameters": {f.name: value(f) for f in method.hyperparameter_fields()}}


@dataclass(frozen=True)
class SweepPoint:
    """One job of a method's sweep: the value of each axis (``(setting, value)`` in the order of the
    method's settings; empty without axes) and every setting at this point."""

    swept: tuple[tuple[str, object], ...]
    settings: dict[str, dict]


def _typed(field: dataclasses.Field, value):
    """A float setting's value as a float (``[0, 1]`` sweeps 0.0 and 1.0), so a point's name and
    flags do not depend on how the config spelled the number."""
    return float(value) if field.type in ("float", "float | None") and isinstance(value, int) else value


def sweep_points(method_name: str, unlearn_block: dict) -> list[SweepPoint]:
    """Every point of a method's sweep, the cartesian product of its axes, the first values first.
    Axes are in the order of the method's settings, the seed last: repeats of one operating point
    are then neighbours, and a point's name ends with its seed."""
    resolved = resolve(method_name, unlearn_block)
    method = get_method(method_name)
    sections = {"loop": loop_fields(method), "hyperparameters": method.hyperparameter_fields()}
    fields_ = [(section, f) for section, fs in sections.items() for f in fs]
    axes = sorted((entry for entry in fields_ if isinstance(resolved[entry[0]][entry[1].name], list)),
                  key=lambda entry: entry[1].name == "seed")
    points = []
    for values in itertools.product(*(resolved[section][f.name] for section, f in axes)):
        settings = {section: dict(values_) for section, values_ in resolved.items()}
        for (section, f), value in zip(axes, values):
            settings[section][f.name] = value
        settings = {section: {f.name: _typed(f, settings[section][f.name]) for f in fs} for section, fs in sections.items()}
        points.append(SweepPoint(tuple((f.name, settings[section][f.name]) for section, f in axes), settings))
    return points


def parse_hyperparameters(method: Method, assignments: Iterable[str]):
    """``["beta=0.4"]`` -> the method's ``Hyperparameters``, each value of its field's type; a
    name the method does not have, a value of the wrong type or out of its bounds, is refused with
    the fix."""
    known = {f.name: f for f in method.hyperparameter_fields()}
    values = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"--hparam '{assignment}' is not of the form NAME=VALUE")
        if name not in known:
            raise ValueError(f"method '{method.name}' has no hyper-parameter '{name}' "
                             f"(it has: {', '.join(known) or 'none'})")
        kind = {"float": float, "int": int, "str": str, "bool": bool}.get(known[name].type, known[name].type)
        try:
            values[name] = (raw.lower() in ("1", "true", "yes")) if kind is bool else kind(raw)
        except ValueError:
            raise ValueError(f"hyper-parameter '{name}' of method '{method.name}' takes a {kind.__name__}, "
                             f"not '{raw}'") from None
        for bound, (holds, sign) in BOUNDS.items():
            if bound in known[name].metadata and not holds(values[name], known[name].metadata[bound]):
                raise ValueError(f"hyper-parameter '{name}' of method '{method.name}' must be {sign} "
                                 f"{known[name].metadata[bound]}, not {raw}")
    return method.Hyperparameters(**values)


# The JSON schema bounds a hyper-parameter may declare, checked on the command line as the config
# check checks them in a config: a stage run by hand refuses what the workflow would.
BOUNDS = {"minimum": (operator.ge, ">="), "exclusiveMinimum": (operator.gt, ">"),
          "maximum": (operator.le, "<="), "exclusiveMaximum": (operator.lt, "<")}


def describe_hyperparameters() -> str:
    """Every method's hyper-parameters, for ``--help``."""
    lines = ["hyper-parameters of each method (--hparam NAME=VALUE):"]
    for name, method in sorted(REGISTRY.items()):
        own = [f"{f.name}={f.default} ({f.metadata.get('description', '')})" for f in method.hyperparameter_fields()]
        lines.append(f"  {name}: {'; '.join(own) or 'none'}")
    return "\n".join(lines)
