"""The config's cross-checks: what its JSON schema cannot say, checked while Snakemake parses the
workflow, before any job starts.

The schema (``workflow/schemas/config.schema.yaml``) fixes each key's type and range. This adds
what depends on other keys or on the registries: an experiment naming a benchmark or model that is
not defined, a forget ratio its benchmark family does not have, a synthetic benchmark of a family
that cannot be synthesized, a local path that does not exist, a saliency split that is not
computed, the methods and their settings (checked against the schema the method registry builds).
What needs the network or a GPU is checked by the first job of a real run, ``check_environment``.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema

from .. import attacks
from ..benchmarks.formats import benchmark_format
from ..benchmarks.records import FISHER_SPLITS
from ..unlearning.methods import REGISTRY
from ..unlearning.settings import resolve, unlearn_block_schema


class ConfigError(Exception):
    """A config the workflow cannot run, with the key to fix."""


def _dotted(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def check_lora(block: dict, where: str) -> None:
    """A method that acts on the weights' own entries (``Method.lora_refusal``: a mask, pruning)
    refused where ``lora_r`` would reach it: its own block, or ``shared`` for a method that trains
    (shared loop settings do not reach one that does not)."""
    for name in block.get("methods", []):
        if name not in REGISTRY or not REGISTRY[name].lora_refusal:
            continue
        method = REGISTRY[name]
        for key in (name, "shared"):
            value = (block.get(key) or {}).get("lora_r", 0)
            if any(v != 0 for v in (value if isinstance(value, list) else [value])) and (key == name or method.trains):
                raise ConfigError(
                    f"{where}.{key}.lora_r: method '{name}' cannot unlearn through LoRA ({method.lora_refusal}). "
                    + (f"Remove lora_r from unlearn.{name}" if key == name else
                       "Set lora_r in the blocks of the methods that take it (e.g. unlearn.ga: {lora_r: 16}), "
                       "not in unlearn.shared") + f"; {name} unlearns the weights themselves")


def check_unlearn_block(block: dict, where: str) -> None:
    check_lora(block, where)  # before the schema: a method without loop settings would only hear "unexpected"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(unlearn_block_schema()).iter_errors(block))
    if error is not None:
        raise ConfigError(f"{where}{_dotted(error.absolute_path)}: {error.message}")
    for method in block["methods"]:
        try:
            resolve(method, block)
        except ValueError as problem:
            raise ConfigError(f"{where}: {problem}") from None


def check_experiments(config: dict) -> None:
    benchmarks, models = config["benchmarks"], config["models"]
    seen = set()
    for index, experiment in enumerate(config["experiments"], start=1):
        where = f"experiments[{index}]"
        for kind, known in (("benchmark", benchmarks), ("model", models)):
            if experiment[kind] not in known:
                raise ConfigError(f"{where} names {kind} '{experiment[kind]}', which is not defined under "
                                  f"'{kind}s' (defined: {', '.join(sorted(known))})")
        pair = (experiment["benchmark"], experiment["model"])
        if pair in seen:
            raise ConfigError(f"{where} repeats the pair benchmark '{pair[0]}' / model '{pair[1]}'; "
                              "merge the two entries")
        seen.add(pair)
        family = benchmark_format(benchmarks[experiment["benchmark"]]["format"])
        for ratio in experiment["forget_ratios"]:
            if ratio not in family.forget_ratios:
                raise ConfigError(f"{where}: benchmark '{experiment['benchmark']}' has no forget ratio {ratio} "
                                  f"(its format offers {', '.join(map(str, family.forget_ratios))})")
        check_unlearn_block(experiment["unlearn"], f"{where}.unlearn")


def check_sources(config: dict) -> None:
    for name, entry in config["benchmarks"].items():
        if "synthetic" in entry and not benchmark_format(entry["format"]).synthesizable:
            raise ConfigError(f"benchmarks.{name}: format {entry['format']} cannot be synthesized; give it a hub: id "
                              "or a local path:")
    for kind in ("benchmarks", "models"):
        for name, entry in config[kind].items():
            if "path" in entry and not Path(entry["path"]).expanduser().is_dir():
                raise ConfigError(f"{kind}.{name}.path: '{entry['path']}' is not a directory; point it at a "
                                  f"local copy or use 'hub:' instead")


def check_saliency_and_evaluation(config: dict) -> None:
    saliency = config["saliency"]
    for split in saliency["fisher_splits"]:
        if split not in FISHER_SPLITS:
            raise ConfigError(f"saliency.fisher_splits: '{split}' is not a Fisher split (one of {', '.join(FISHER_SPLITS)})")
    for key in ("target", "preserve", "preserve_vision"):
        for split in [saliency[key]] if key == "target" else saliency.get(key, []):
            if split not in saliency["fisher_splits"]:
                raise ConfigError(f"saliency.{key} uses Fisher split '{split}', which is not in saliency.fisher_splits "
                                  f"{saliency['fisher_splits']}; add it there")
    if config["evaluation"]["primary"] not in config["evaluation"]["scoring"]:
        raise ConfigError(f"evaluation.primary '{config['evaluation']['primary']}' is not one of "
                          f"evaluation.scoring {config['evaluation']['scoring']}")


def check_attacks(config: dict) -> None:
    """Each experiment's attack entries against their kinds' schemas; a kind that reads never-trained
    people refused on a synthetic benchmark that has none."""
    for index, experiment in enumerate(config["experiments"], start=1):
        for name, entry in (experiment.get("attacks") or {}).items():
            where = f"experiments[{index}].attacks.{name}"
            try:
                attack = attacks.entry_kind(name, entry)
            except ValueError as problem:
                raise ConfigError(f"{where}: {problem}; name the kind with 'kind:'") from None
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(attacks.entry_schema(attack)).iter_errors(entry or {}))
            if error is not None:
                raise ConfigError(f"{where}{_dotted(error.absolute_path)}: {error.message}")
            synthetic = config["benchmarks"][experiment["benchmark"]].get("synthetic")
            if attack.needs_nonmembers and synthetic is not None and not synthetic.get("holdout_profiles"):
                raise ConfigError(f"{where}: {attack.label} needs never-trained people, and benchmark "
                                  f"'{experiment['benchmark']}' has none: set its synthetic.holdout_profiles > 0")


def check_config(config: dict) -> None:
    """Raise ``ConfigError`` naming the first problem of a schema-valid config."""
    check_experiments(config)
    check_sources(config)
    check_saliency_and_evaluation(config)
    check_attacks(config)
