"""What a config asks the workflow to run: its experiments, runs, model variants and each job's
settings, as lookups the rules call.

Plain Python over the validated config dict, so the rules stay declarative and the lookups are
tested without Snakemake. Everything a rule needs from Snakemake itself (``ancient``, wildcards
objects) stays in ``workflow/rules/common.smk``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .. import attacks as attack_kinds
from ..benchmarks.layouts import LAYOUTS
from ..unlearning.methods import Method, get_method
from ..unlearning.settings import sweep_points
from .artifacts import path as artifact
from .flags import cli_flags, hyperparameter_flags
from .variants import Variant, setting_segments, unlearned_variants, value_label

TABLE_ITEMS = {"choice": "multiple_choice", "rouge_l": "generation"}  # a table column's measure -> its item kind


def source_flags(entry: dict, prefix: str = "") -> str:
    """``--<prefix>hub ID`` or ``--<prefix>path DIR``: where a benchmark or model comes from, as the
    config says it (never guessed from the string)."""
    kind = "hub" if "hub" in entry else "path"
    value = entry[kind] if kind == "hub" else str(Path(entry[kind]).expanduser())
    return f"--{prefix}{kind} {shlex.quote(value)}"


class StudyPlan:
    def __init__(self, config: dict):
        self.config = config
        self._points: dict[tuple[str, str], dict[str, dict]] = {}

    def experiment(self, benchmark: str, model: str) -> dict:
        return next(e for e in self.config["experiments"] if (e["benchmark"], e["model"]) == (benchmark, model))

    def runs(self):
        """Every (benchmark, model, forget ratio) the config asks for."""
        for entry in self.config["experiments"]:
            for ratio in entry["forget_ratios"]:
                yield entry["benchmark"], entry["model"], ratio

    def model(self, name: str) -> dict:
        return self.config["models"][name]

    def is_tiny(self, model: str) -> bool:
        return "tiny" in self.model(model)

    def gpus(self, model: str, processes: int = 1) -> int:
        """GPU count a job of this model asks the scheduler for (one per process)."""
        return 0 if self.model(model)["device"] == "cpu" else processes

    def needs_environment_check(self, benchmark: str, model: str) -> bool:
        """A real run, which ``check_environment`` checks first: a hub or local model, or a hub benchmark."""
        return not self.is_tiny(model) or "hub" in self.config["benchmarks"][benchmark]

    def instrumented(self) -> list[tuple[str, str]]:
        """(benchmark, model) pairs whose instrument is measured: a synthetic benchmark and the tiny
        model built for it (whose base model is a directory of this run)."""
        return [(e["benchmark"], e["model"]) for e in self.config["experiments"]
                if "synthetic" in self.config["benchmarks"][e["benchmark"]] and self.is_tiny(e["model"])]

    def instrument_metrics(self, benchmark: str, model: str) -> dict[str, str]:
        """``label -> metrics.json`` of the models the instrument report lists, at every forget ratio."""
        return {f"{variant} (forget {ratio}%)": artifact("metrics", benchmark=benchmark, model=model, ratio=ratio,
                                                         variant=variant)
                for ratio in self.experiment(benchmark, model)["forget_ratios"] for variant in ("base", "vanilla", "oracle")}

    def benchmark_source_flags(self, benchmark: str) -> str:
        entry = self.config["benchmarks"][benchmark]
        if "synthetic" in entry:
            return f"--path {artifact('raw_benchmark', benchmark=benchmark)}"
        return source_flags(entry)

    def base_model_source(self, benchmark: str, model: str) -> str:
        """What the first training stage loads: a tiny model's directory, a hub id or a local path."""
        entry = self.model(model)
        if self.is_tiny(model):
            return artifact("base", benchmark=benchmark, model=model)
        return entry.get("hub") or str(Path(entry["path"]).expanduser())

    def evaluated_model(self, benchmark: str, model: str, ratio, variant: str) -> str:
        """What the evaluation of a variant loads: the base model, the vanilla model (an unlearned
        variant's changes are applied to it), or for the oracle the base model fine-tuned on the
        retain set only, which never saw the forget people."""
        if variant == "base":
            return self.base_model_source(benchmark, model)
        if variant == "oracle":
            return artifact("reference", benchmark=benchmark, model=model, ratio=ratio)
        return artifact("vanilla", benchmark=benchmark, model=model)

    def training_flags(self, model: str) -> str:
        """Device, precision and memory flags of the stages that train ``model`` (finetune, unlearn)."""
        entry = self.model(model)
        return cli_flags({key: entry.get(key, False) for key in ("device", "dtype", "gradient_checkpointing")})

    def tiny_flags(self, model: str) -> str:
        tiny = self.model(model)["tiny"]
        pretrain = {key: value for key, value in tiny["pretrain"].items() if key != "threads"}  # the rule's threads:
        return cli_flags({"family": tiny["family"], "seed": tiny["seed"], **tiny["architecture"], **pretrain})

    # --- unlearning ---------------------------------------------------------------------------------

    def unlearn_points(self, benchmark: str, model: str) -> dict[str, dict]:
        """Every unlearned variant an experiment asks for, by name, with its settings (one value
        each: ``{"loop": ..., "hyperparameters": ...}``): each method once per mask (masked
        methods) and per point of its sweep, in sweep order."""
        key = (benchmark, model)
        if key not in self._points:
            block, saliency = self.experiment(benchmark, model)["unlearn"], self.config["saliency"]
            points = {m: sweep_points(m, block) for m in block["methods"]}
            variants = unlearned_variants(block["methods"], saliency["betas"], saliency["module_groups"],
                                          {m: [p.swept for p in ps] for m, ps in points.items()},
                                          saliency.get("controls", []))
            settings = {(m, setting_segments(p.swept)): p.settings for m, ps in points.items() for p in ps}
            self._points[key] = {v.name: settings[(v.method, v.settings)] for v in variants}
            self._points[key] |= self._calibrated_points(variants, self._points[key])
        return self._points[key]

    def _calibrated_points(self, variants: list[Variant], points: dict[str, dict]) -> dict[str, dict]:
        """The calibrated runs (``comparison.calibration``): every row at its protocol point (its
        first sweep point), with the calibration's epochs as the most it runs, once per seed."""
        calibration = self.config.get("comparison", {}).get("calibration")
        if not calibration:
            return {}
        protocol: dict[Variant, Variant] = {}
        for variant in variants:
            protocol.setdefault(variant.row, variant)
        calibrated = {}
        for variant in protocol.values():
            settings = points[variant.name]
            for seed in calibration["seeds"]:
                loop = settings["loop"] and {**settings["loop"], "epochs": calibration["epochs"], "seed": seed}
                calibrated[variant.calibrated_at(seed).name] = {**settings, "loop": loop}
        return calibrated

    def variant_names(self, benchmark: str, model: str) -> list[str]:
        """Every unlearned variant an experiment asks for, by name."""
        return list(self.unlearn_points(benchmark, model))

    def unlearn_job(self, benchmark: str, model: str, variant: str) -> tuple[Method, dict]:
        """The method of an unlearn job and its resolved settings (only its own, at its sweep point)."""
        points = self.unlearn_points(benchmark, model)
        if variant not in points:
            raise ValueError(f"'{variant}' is not an unlearned variant of {benchmark}/{model} in this config")
        return get_method(Variant.parse(variant).method), points[variant]

    def unlearn_inputs(self, benchmark: str, model: str, ratio: str, variant: str) -> dict[str, str]:
        """What a method's job reads besides the vanilla model: its mask (SalUn's at the job's
        ``mask_fraction``), its frozen retain-set model, the neuron statistics it prunes from."""
        method, settings = self.unlearn_job(benchmark, model, variant)
        run, parsed = {"benchmark": benchmark, "model": model, "ratio": ratio}, Variant.parse(variant)
        inputs = {}
        if method.needs_mask and method.mask_kind == "salun":
            fraction = value_label(settings["hyperparameters"]["mask_fraction"])
            inputs["mask"] = artifact("salun_mask", **run, fraction=fraction)
        elif method.needs_mask and parsed.control:
            inputs["mask"] = artifact("control_mask", **run, beta=parsed.beta, modules=parsed.modules, control=parsed.control)
        elif method.needs_mask:
            inputs["mask"] = artifact("mask", **run, beta=parsed.beta, modules=parsed.modules)
        if method.frozen_model == "retain_finetuned":
            inputs["reference"] = artifact("reference", **run)
        if parsed.calibrated:
            inputs["oracle"] = artifact("reference", **run)  # the retain-only model: the calibration's target
        inputs |= {f"neurons_{split}": artifact("neuron_importance", **run, split=split)
                   for split in method.activation_splits}
        return inputs

    def unlearn_flags(self, benchmark: str, model: str, ratio: str, variant: str) -> str:
        method, settings = self.unlearn_job(benchmark, model, variant)
        inputs = self.unlearn_inputs(benchmark, model, ratio, variant)
        loop = settings["loop"]
        if not loop.get("lora_r"):  # the stage's default, unsaid: a full-parameter job's params stay as they were
            loop = {key: value for key, value in loop.items() if not key.startswith("lora_")}
        flags = [f"--method {method.name}", cli_flags(loop), hyperparameter_flags(settings["hyperparameters"])]
        if "mask" in inputs:
            flags.append(f"--mask {Path(inputs['mask']).parent}")
        if "reference" in inputs:
            flags.append(f"--reference {inputs['reference']}")
        if method.activation_splits:
            flags.append(f"--neuron-importance {Path(inputs[f'neurons_{method.activation_splits[0]}']).parent}")
        if "oracle" in inputs:
            evaluation = self.config["evaluation"]
            flags.append(f"--until-oracle {inputs['oracle']} " + cli_flags({
                "tolerance": self.config["comparison"]["forget_tolerance"],
                "check_every": self.config["comparison"]["calibration"]["check_every"],
                "scoring": evaluation["primary"], "eval_batch_size": evaluation["batch_size"],
                "max_new_tokens": evaluation["max_new_tokens"]}))
        return " ".join(flags)

    def unlearn_processes(self, model: str) -> int:
        """Processes (one per GPU) an unlearning job of ``model`` shards its training over."""
        return self.model(model).get("unlearn_gpus", 1)

    def unlearn_job_processes(self, benchmark: str, model: str, variant: str) -> int:
        """A job's processes: the model's, or one for a method that takes no gradient step (a
        weight edit on the host, ``manu``), which asks for no GPU (``unlearn_job_gpus``), and one
        for a LoRA job (``lora_r``), whose adapters fit one GPU and which does not run sharded."""
        method, settings = self.unlearn_job(benchmark, model, variant)
        return self.unlearn_processes(model) if method.trains and not settings["loop"]["lora_r"] else 1

    def unlearn_job_gpus(self, benchmark: str, model: str, variant: str) -> int:
        trains = self.unlearn_job(benchmark, model, variant)[0].trains
        return self.gpus(model, self.unlearn_job_processes(benchmark, model, variant)) if trains else 0

    # --- attacks ---------------------------------------------------------------------------------

    def attack_entries(self, benchmark: str, model: str) -> dict[str, dict]:
        """An experiment's attack entries (its ``attacks:`` block), in the config's order."""
        return {name: entry or {} for name, entry in (self.experiment(benchmark, model).get("attacks") or {}).items()}

    def attack_names(self, benchmark: str, model: str) -> list[str]:
        return list(self.attack_entries(benchmark, model))

    def _attack_entry(self, benchmark: str, model: str, name: str) -> dict:
        entries = self.attack_entries(benchmark, model)
        if name not in entries:
            raise ValueError(f"'{name}' is not an attack entry of {benchmark}/{model} in this config "
                             f"(entries: {', '.join(entries) or 'none'})")
        return entries[name]

    def attack_kind(self, benchmark: str, model: str, name: str) -> attack_kinds.Attack:
        return attack_kinds.entry_kind(name, self._attack_entry(benchmark, model, name))

    def attack_settings(self, benchmark: str, model: str, name: str) -> dict:
        """The settings the attack stage is handed (its kind's defaults filled in)."""
        return attack_kinds.resolve(name, self._attack_entry(benchmark, model, name))

    def attack_scope(self, benchmark: str, model: str, name: str) -> str:
        return attack_kinds.scope(name, self._attack_entry(benchmark, model, name))

    def evaluation_flags(self, benchmark: str, reads: str = "everything") -> str:
        """The evaluate stage's flags for a model whose evaluation feeds reports that read
        ``everything`` (the config's evaluation: Table 1, the sweep tables, case studies), only
        ``table`` cells (a sweep point of the frontier and the equal-forgetting table: the primary
        scoring and the item kinds of the benchmark's table columns), or only the ``forget``
        columns' accuracy (an attacked model, for the robustness table)."""
        evaluation = {k: v for k, v in self.config["evaluation"].items() if k != "frontier_points"}
        primary = [evaluation["primary"]]
        if reads == "table":  # of the item kinds the config scores, those its table's columns come from
            columns = LAYOUTS[self.config["benchmarks"][benchmark]["format"]].columns.values()
            kinds = dict.fromkeys(TABLE_ITEMS[c.measure] for c in columns)
            evaluation |= {"scoring": primary, "outputs": [k for k in kinds if k in evaluation.get("outputs", kinds)]}
        elif reads == "forget":
            evaluation |= {"scoring": primary, "outputs": ["multiple_choice"]}
        elif reads != "everything":
            raise ValueError(f"unknown evaluation_reads '{reads}' (everything, table, forget)")
        return cli_flags(evaluation)

    # --- the environment check ------------------------------------------------------------------

    def environment_check_flags(self, benchmark: str, model: str) -> str:
        """What to check for one experiment, and what will run (the memory estimate needs both)."""
        entry, bench, settings = self.experiment(benchmark, model), self.config["benchmarks"][benchmark], self.model(model)
        methods = entry["unlearn"]["methods"]
        flags = {"benchmark_name": benchmark, "format": bench["format"], "model_name": model,
                 "device": settings["device"], "dtype": settings["dtype"], "finetune_lora_r": entry["finetune"]["lora_r"],
                 "finetune_batch_size": entry["finetune"]["batch_size"],
                 "fisher_batch_size": self.config["saliency"]["batch_size"],
                 "unlearn_batch_size": max((s["loop"]["batch_size"] for s in self.unlearn_points(benchmark, model).values()
                                           if s["loop"]), default=1),
                 "eval_batch_size": self.config["evaluation"]["batch_size"], "methods": methods,
                 "gradient_checkpointing": settings.get("gradient_checkpointing", False),
                 "unlearn_gpus": self.unlearn_processes(model)}
        kinds = {name: self.attack_kind(benchmark, model, name) for name in self.attack_names(benchmark, model)}
        trains = [t for name, kind in kinds.items()
                  if (t := kind.training(kind.Settings(**self.attack_settings(benchmark, model, name))))]
        if trains:  # the memory estimate of the largest: every parameter (rank 0) if any, else the largest rank
            flags["attack_lora_r"] = 0 if any(t["lora_r"] == 0 for t in trains) else max(t["lora_r"] for t in trains)
            flags["attack_batch_size"] = max(t["batch_size"] for t in trains)
        sources = []
        if "synthetic" not in bench:
            flags["forget_ratios"] = entry["forget_ratios"]
            sources.append(source_flags(bench, "dataset-"))
        if not self.is_tiny(model):
            sources.append(source_flags(settings, "model-"))
        return " ".join([cli_flags(flags), *sources])
