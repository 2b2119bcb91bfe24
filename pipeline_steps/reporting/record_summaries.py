"""What an artifact holds, summarised for ``python -m pipeline_steps.inspect``: directories and records.

The tensor files are in ``summaries.py``; here are the artifacts around them: an unlearned
variant's directory (its stored change, read against the vanilla model its manifest names), a
``metrics.json`` (its ``table`` row as the result tables show it), a prepared benchmark, a model
directory, and ``locate_changes``' output. Each is read with the reader its stage or the tables
use, so a summary says what the pipeline itself would read, not a re-parse of its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..benchmarks.layouts import LAYOUTS
from ..benchmarks.records import read_manifest, read_split
from ..cli import StageError
from ..models.families import FAMILIES, family_of
from ..saliency.tensor_files import INDEX_SUFFIX, TensorFile
from ..storage import read_json
from .estimates import Estimate
from .labels import COLUMNS, column_label
from .summaries import Summary, SummaryTable, change_summary, read_changes, stored_names
from .tables import format_value


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def last_step(log: Path) -> dict:
    """Steps and the last logged losses of a ``train_log.jsonl`` (empty if there is none)."""
    if not log.is_file():
        return {}
    rows = read_jsonl(log)
    if not rows:
        return {"train log": "empty"}
    if "pruned" in rows[0]:  # a pruning method's log: one record per layer (unlearning/methods.py, MANU)
        return {"pruned neurons": {f"layer {r['layer']}": r["pruned"] for r in rows}}
    last = {k: round(v, 4) for k, v in rows[-1].items() if "loss" in k and isinstance(v, float)}
    return {"logged steps": len(rows), "last step": rows[-1].get("step"), "last losses": last}


def find_vanilla(recorded: str, near: Path) -> Path | None:
    """The vanilla model a manifest names: as given, else relative to the working directory or to
    a folder above the variant (stages record paths as they were called, usually repo-relative)."""
    if not recorded:
        return None
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, *(p / path for p in near.resolve().parents)]
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def family_of_names(names) -> object | None:
    """The family whose parameter prefixes cover every name (a change file records no model type)."""
    for family in FAMILIES.values():
        try:
            for name in names:
                family.module_of(name)
        except ValueError:
            continue
        return family
    return None


def variant_summary(changes_path: Path, vanilla: Path | None = None) -> Summary:
    """An unlearned variant: its manifest's settings, its training log, and what moved by how much."""
    from ..models.loading import load_model, model_fingerprint

    changes = read_changes(changes_path)
    directory = changes.index_path.parent
    manifest_path = directory / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    training = manifest.get("training") or {}  # none for a method that does not train
    facts = {"directory": str(directory), "forget ratio": manifest.get("forget_ratio"),
             "module group": manifest.get("module_group"), "mask": manifest.get("mask") or None,
             "reference": manifest.get("reference") or None, "learning rate": training.get("learning_rate"),
             "epochs": training.get("epochs"), "hyper-parameters": manifest.get("hyperparameters"),
             **({"lora": manifest["lora"]} if manifest.get("lora") else {}),  # adapters, merged (unlearn --lora-r)
             **last_step(directory / "train_log.jsonl")}
    notes = [] if manifest else [f"no manifest.json next to {changes.index_path.name}: settings unknown"]
    if vanilla is None:
        vanilla = find_vanilla(manifest.get("vanilla", ""), directory)
        if vanilla is None:
            notes.append(f"the vanilla model ('{manifest.get('vanilla', '')}' in the manifest) was not found, so "
                         "the size of the changes is unknown (give it with --vanilla)")
    tensors = family = None
    if vanilla is not None:
        facts["vanilla"] = str(vanilla)
        if model_fingerprint(vanilla) != changes.metadata.get("vanilla_fingerprint"):
            notes.append(f"{vanilla} is not the model these changes were computed from (fingerprint differs); "
                         "sizes are not computed")
        else:
            # The model's parameter names, not the checkpoint's (see locate_changes), in the dtype the
            # changes are stored in: half the memory of float32 for a bfloat16 model, same deltas.
            loaded = load_model(str(vanilla), dtype=manifest.get("dtype", "float32"))
            tensors, family = dict(loaded.model.named_parameters()), loaded.family
            notes.append(f"|delta| = |unlearned - vanilla|, vanilla read from {vanilla}")
    family = family or family_of_names(stored_names(changes))
    return change_summary(changes, tensors, family, facts, notes)


def shown(value, key: str, measure: str) -> str:
    """A table value as the result tables print it; a column ``labels.py`` does not name (MLLMU-Bench's
    Test VQA) is printed like the labelled columns of its measure."""
    if key not in COLUMNS:
        metric = "ROUGE-L" if measure == "rouge_l" else "Acc"
        key = next(column for column, spec in COLUMNS.items() if spec[2] == metric)
    return format_value(None if value is None else Estimate(value), key)


def metrics_summary(path: Path, metrics: dict) -> Summary:
    """The ``table`` row with the column labels and formatting of the result tables, and where each
    number comes from (scoring mode, correct / asked, or the number of ROUGE-L items)."""
    table, primary = metrics["table"], metrics.get("primary_scoring")
    layout = next((lay for lay in LAYOUTS.values() if set(lay.columns) == set(table)), None)
    summary = Summary("metrics", str(path), {
        "model": metrics.get("model"), "changes": metrics.get("changes") or None,
        "benchmark": metrics.get("benchmark"), "forget ratio": metrics.get("forget_ratio"),
        "primary scoring": primary, "scoring modes": metrics.get("scoring_modes"), "seed": metrics.get("seed")})
    row = SummaryTable(f"Table row ({primary} scoring for multiple choice)",
                       ["column", "label", "value", "shown", "from"])
    for key, value in table.items():
        column = layout.columns[key] if layout else None
        measure = column.measure if column else ("rouge_l" if "rouge" in key else "choice")
        group = column.group if column else key
        if measure == "choice":
            counts = metrics.get("multiple_choice", {}).get(primary, {}).get(group, {})
            source = f"{counts.get('correct')}/{counts.get('n')} correct" if counts else ""
        else:
            source = f"ROUGE-L over {metrics.get('generation_rouge_l', {}).get(group, {}).get('n')} items"
        row.rows.append([key, column_label(key) if key in COLUMNS else key, value, shown(value, key, measure),
                         source])
    summary.tables.append(row)
    accuracies = dict(metrics.get("multiple_choice", {}))
    if metrics.get("generate_lenient"):  # the lenient reading of the generate outputs: a diagnostic
        accuracies["generate_lenient"] = metrics["generate_lenient"]
    modes = list(accuracies)
    by_mode = SummaryTable("Multiple-choice accuracy per scoring mode", ["group", *modes],
                           formats={mode: "{:.2%}" for mode in modes})
    groups = dict.fromkeys(g for mode in modes for g in accuracies[mode])
    by_mode.rows = [[g, *(accuracies[m].get(g, {}).get("accuracy") for m in modes)] for g in groups]
    summary.tables.append(by_mode)
    if metrics.get("protocol"):
        summary.facts["multiple-choice protocol"] = f"{metrics['protocol']} ({metrics.get('generate_rule')})"
    if metrics.get("generate_parse_rules"):
        summary.facts["generate parse rules"] = metrics["generate_parse_rules"]
    if layout is None:
        summary.notes.append("the table's columns match no benchmark layout (benchmarks/layouts.py)")
    return summary


def benchmark_summary(directory: Path) -> Summary:
    """A prepared benchmark: where it was read from and every split's size, counted from the split
    files themselves (the manifest records only some of them)."""
    manifest = read_manifest(directory)
    summary = Summary("benchmark", str(directory), {
        "format": manifest.get("format"), "source": manifest.get("source"),
        "forget ratios": manifest.get("forget_ratios"), "seed": manifest.get("seed"),
        "images": len(list((directory / "images").glob("*")))})
    table = SummaryTable("Splits", ["split", "profiles", "train vqa", "train text", "multiple choice", "generation",
                                    "fill blank"])
    def order(split: str):  # forget_5 before forget_10
        name, _, number = split.rpartition("_")
        return (name, int(number)) if number.isdigit() else (split, -1)

    for split in sorted((p.stem for p in (directory / "splits").glob("*.jsonl")), key=order):
        records = read_split(directory, split)
        count = lambda kind, modality=None: sum(1 for r in records for item in getattr(r, kind)  # noqa: E731
                                                if modality is None or item.modality == modality)
        table.rows.append([split, len(records), count("train", "vqa"), count("train", "text"),
                           count("multiple_choice"), count("generation"), count("fill_blank")])
    summary.tables.append(table)
    return summary


def model_summary(directory: Path) -> Summary:
    """A saved model: family, stored parameter count and dtypes (from the safetensors headers, no
    loading), and what built it (build_base's or finetune's manifest, and its training log)."""
    config = read_json(directory / "config.json")
    model_type = config.get("model_type")
    try:
        family = family_of(model_type).name
    except ValueError:
        family = f"unsupported ({model_type})"
    index = directory / f"model{INDEX_SUFFIX}"
    weights = TensorFile(index if index.is_file() else directory / "model.safetensors")
    dtypes: dict[str, int] = {}
    for name in weights.names():
        dtype, shape = weights.spec(name)
        key = str(dtype).removeprefix("torch.")
        dtypes[key] = dtypes.get(key, 0) + math.prod(shape)
    facts = {"family": family, "model type": model_type, "parameters (stored)": sum(dtypes.values()),
             "stored dtypes": dtypes, "config dtype": config.get("dtype") or config.get("torch_dtype"),
             "stored tensors": len(weights.names()), "bytes": weights.nbytes()}
    if (directory / "build_manifest.json").is_file():
        built = read_json(directory / "build_manifest.json")
        facts |= {"built by": "build_base (a tiny base model)", "parameters (model)": built.get("parameters")}
    if (directory / "finetune_manifest.json").is_file():
        tuned = read_json(directory / "finetune_manifest.json")
        facts |= {"built by": f"finetune of {tuned.get('base')} on split '{tuned.get('split')}'",
                  "training pairs": tuned.get("training_pairs"),
                  "lora": tuned.get("lora") or "none (all parameters)",
                  "trainable parameters": tuned.get("trainable_parameters")}
    return Summary("model", str(directory), facts | last_step(directory / "train_log.jsonl"))


def located_summary(path: Path, located: dict) -> Summary:
    """``locate_changes``' output: how many of the n largest |delta| entries land in each part."""
    summary = Summary("located_changes", str(path), {
        "variant": located.get("variant"), "n (mask's selection)": located.get("requested"),
        "selected": located.get("selected"), "threshold |delta|": located.get("threshold"),
        "model entries": located.get("total_entries")})
    parts: dict[str, int] = {}
    for cell in located.get("cells", []):
        parts[cell["part"]] = parts.get(cell["part"], 0) + cell["count"]
    table = SummaryTable("Largest changes per part", ["part", "count", "share"], formats={"share": "{:.2%}"})
    table.rows = [[part, count, count / located["selected"] if located.get("selected") else 0.0]
                  for part, count in sorted(parts.items())]
    summary.tables.append(table)
    return summary


def not_known(path: Path, why: str) -> StageError:
    return StageError(f"{path}: not an artifact inspect knows ({why}); it knows Fisher files, masks, unlearned "
                      "variants, metrics.json, prepared benchmarks, model directories and changes/<variant>.json")
