"""Attacks on unlearned models: is what a variant no longer answers really gone from its weights?

A drop in Forget VQA accuracy can hide knowledge that is still in the weights: a few fine-tuning
steps on related data bring it back, quantization undoes small weight changes, and a
membership-inference attack still tells the forgotten people from people never seen. Each kind of
attack is one class in one module of this package, which declares everything the rest of the
system needs about it (as the unlearning methods do in ``unlearning/methods.py``):

* ``kind``, ``label``: its name in configs, paths and command lines, and in tables;
* ``Settings``: a frozen dataclass of its own settings with defaults, descriptions and bounds
  (``unlearning.methods.hyperparameter`` fields), from which the config check builds its schema;
* ``scope``: which variants it attacks by default (``protocol``: vanilla, the oracle and every
  Table 1 row at its protocol point; ``frontier``: every point the equal-forgetting table chooses
  from; ``all``: every unlearned variant); a config entry may set ``variants`` to another scope;
* ``produces_model``: whether it writes a model (stored changes relative to the model the variant's
  evaluation loads, ``unlearning/weights.py``) that the existing ``evaluate`` stage then scores;
* ``evaluated_half``: which people of the forget columns that evaluation is read on (``report``:
  the half it did not train on, ``reporting/estimates.people_half``; ``all``);
* ``needs_nonmembers``: whether it reads the benchmark's never-trained ``holdout`` people (the
  config check refuses a synthetic benchmark without them);
* ``training``: for an attack that trains, its LoRA rank and batch (the GPU memory estimate);
* ``run``: the attack itself, on the variant's model as the evaluate stage loads it.

A config names attack *entries*: ``attacks: {relearn: {}, relearn_retain: {kind: relearn, data:
retain}}``, each of one kind (its name unless ``kind`` says otherwise), so one kind can run with
several settings. Modules are found by listing this package, so adding a kind is one module here
and one entry in a config; the workflow (``workflow/rules/attack.smk``) runs every entry through
the one ``attack`` stage and the ``evaluate`` stage.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..benchmarks.records import read_split
from ..unlearning.settings import BOUNDS, JSON_TYPES

SCOPES = ("protocol", "frontier", "all")  # which variants an entry attacks (study/report_selection.py)
COMMON_KEYS = ("kind", "variants")  # keys of every config entry besides its kind's settings


@dataclass
class Target:
    """What an attack runs on: the variant's model as its evaluation loads it (the evaluated
    model with the variant's stored changes applied), and where its data is."""

    model: Any  # torch.nn.Module, in eval mode
    processor: Any
    family: Any
    benchmark: Path
    forget_ratio: int
    device: str
    dtype: str
    batch_size: int
    seed: int
    gradient_checkpointing: bool = False  # for an attack that trains


class Attack:
    kind: ClassVar[str]
    label: ClassVar[str]
    Settings: ClassVar[type]
    scope: ClassVar[str] = "protocol"
    produces_model: ClassVar[bool] = False
    evaluated_half: ClassVar[str] = "all"
    needs_nonmembers: ClassVar[bool] = False  # reads the benchmark's never-trained ``holdout`` people

    def run(self, target: Target, settings, scratch: Path) -> dict:
        """Attack ``target`` (a model attack changes ``target.model`` in place; the stage stores
        what changed); write any per-example files into ``scratch``; return the result summary."""
        raise NotImplementedError

    def training(self, settings) -> dict | None:
        """``{"lora_r": ..., "batch_size": ...}`` of an attack that trains the model (for the
        environment check's memory estimate), None for one that does not."""
        return None

    @classmethod
    def setting_fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls.Settings)


REGISTRY: dict[str, Attack] = {}


def register(cls: type[Attack]) -> type[Attack]:
    if cls.scope not in SCOPES:
        raise TypeError(f"{cls.__name__}.scope must be one of {SCOPES}")
    clash = {f.name for f in dataclasses.fields(cls.Settings)} & set(COMMON_KEYS)
    if clash:
        raise TypeError(f"{cls.__name__}.Settings may not define {sorted(clash)}: every config entry has them")
    REGISTRY[cls.kind] = cls()
    return cls


def get_attack(kind: str) -> Attack:
    if kind not in REGISTRY:
        raise ValueError(f"unknown attack kind '{kind}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[kind]


def _field_schema(field: dataclasses.Field) -> dict:
    kinds = JSON_TYPES[field.type] if isinstance(field.type, str) else "string"
    schema = {"type": kinds, **{k: v for k, v in field.metadata.items() if k != "description"}}
    if "description" in field.metadata:
        schema["description"] = field.metadata["description"]
    return schema


def entry_schema(attack: Attack) -> dict:
    """JSON schema of one config entry of ``attack``'s kind: its settings, ``kind`` and ``variants``."""
    properties = {f.name: _field_schema(f) for f in attack.setting_fields()}
    properties |= {"kind": {"const": attack.kind}, "variants": {"enum": list(SCOPES)}}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def entry_kind(name: str, entry: dict) -> Attack:
    """The attack kind of the config entry ``attacks.<name>``."""
    return get_attack((entry or {}).get("kind", name))


def resolve(name: str, entry: dict | None) -> dict:
    """Every setting of one config entry, its kind's defaults filled in (the attack stage's
    ``--settings``; the entry's ``kind`` and ``variants`` are the workflow's, not the stage's)."""
    attack, entry = entry_kind(name, entry), entry or {}
    return {f.name: entry.get(f.name, f.default) for f in attack.setting_fields()}


def scope(name: str, entry: dict | None) -> str:
    return (entry or {}).get("variants", entry_kind(name, entry).scope)


def parse_settings(attack: Attack, text: str):
    """The stage's ``--settings`` JSON as the kind's ``Settings``; an unknown name, a value of the
    wrong type or out of its bounds is refused, as the config check refuses it."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--settings is not JSON: {error}") from None
    known = {f.name: f for f in attack.setting_fields()}
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"attack '{attack.kind}' has no setting '{name}' (it has: {', '.join(known) or 'none'})")
        kind = {"float": (int, float), "int": int, "str": str, "bool": bool}.get(known[name].type, object)
        if not isinstance(value, kind) or (isinstance(value, bool) and known[name].type != "bool"):
            raise ValueError(f"setting '{name}' of attack '{attack.kind}' takes a {known[name].type}, not {value!r}")
        for bound, (holds, sign) in BOUNDS.items():
            if bound in known[name].metadata and not holds(value, known[name].metadata[bound]):
                raise ValueError(f"setting '{name}' of attack '{attack.kind}' must be {sign} "
                                 f"{known[name].metadata[bound]}, not {value}")
        if "enum" in known[name].metadata and value not in known[name].metadata["enum"]:
            raise ValueError(f"setting '{name}' of attack '{attack.kind}' is one of {known[name].metadata['enum']}, "
                             f"not {value!r}")
    return attack.Settings(**values)


def profile_examples(benchmark: Path, split: str, modality: str) -> list[tuple[str, object]]:
    """(profile id, Example) of every training pair of ``modality`` of ``split``'s profiles, in the
    split's order: ``training.examples.split_examples``'s examples, labelled with their person."""
    from ..training.examples import split_examples  # torch: the workflow reads this package while it parses

    records = read_split(benchmark, split)
    owners = [r.id for r in records for pair in r.train if pair.modality == modality]
    if not owners:
        return []
    examples = split_examples(benchmark, [split], [modality])
    assert len(examples) == len(owners), "split_examples returns every pair of the modality in the split's order"
    return list(zip(owners, examples))


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
