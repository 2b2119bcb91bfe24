"""Which variants each report compares: the tables' rows, the sweep tables', the figures' points.

One rule for every report. A *row* is a method, masked methods at the *reported mask* (the first
configured beta, module group ``all`` if configured, the paper's main setting); the sweep tables
vary one of beta or module group at the reported value of the other. Each row was run at every
point of its method's sweep (``unlearning/settings.py``); its *protocol point* is the first value
of every axis, the shared setting of the paper's protocol. Seeds are repeats of a point: a report
reads every seed of the points it shows and averages them.

* The paper-protocol table (Table 1) and the sweep tables: each row at its protocol point.
* The equal-forgetting table: with ``comparison.calibration``, each row's calibrated runs (its
  protocol point unlearned until it forgets as much as the oracle, ``unlearning/calibration.py``,
  every seed); without, every point of the row, of which the table picks one by the config's rule
  (``comparison``).
* The frontier figure: each row at every point, its calibrated one included.
* Heatmaps and case studies show one model per row: the protocol point's first seed.

A sweep point that only the frontier and the equal-forgetting table read is evaluated on what
their cells read (``evaluation.frontier_points``); every other variant on everything.

Control masks (``saliency.controls``) are rows of their own beside the Fisher-ratio mask's, at the
reported mask, in every report but the beta and module-group sweep tables.

Every table and figure also reads the vanilla model and the oracle (the retain-only model).

Attacks (``attacks/``) run on vanilla, the oracle and the unlearned variants of their entry's scope:
``protocol`` (Table 1's variants), ``frontier`` (the equal-forgetting table's) or ``all``. The
robustness table shows every row of Table 1 at its protocol point (first seed).
"""

from __future__ import annotations

from pathlib import Path

from ..unlearning.methods import get_method, uses_fisher_ratio_mask
from .artifacts import path as artifact
from .plan import StudyPlan
from .variants import Variant, beta_label

SWEEPS = {"modules": "module_groups", "beta": "betas"}  # sweep table -> the saliency list it varies
REFERENCES = ("vanilla", "oracle")  # what every comparison is read against


def evaluation_files(metrics: list[str]) -> list[str]:
    """The files a report reads of each evaluation: its metrics and the per-item predictions beside them."""
    return [path for m in metrics for path in (m, str(Path(m).with_name("predictions.jsonl")))]


class ReportSelection:
    def __init__(self, plan: StudyPlan):
        self.plan, self.saliency = plan, plan.config["saliency"]
        self._full: dict[tuple[str, str], frozenset[str]] = {}

    def reported_mask(self) -> dict[str, str]:
        groups = self.saliency["module_groups"]
        return {"beta": beta_label(self.saliency["betas"][0]), "modules": "all" if "all" in groups else groups[0]}

    def masked_methods(self, benchmark: str, model: str) -> list[str]:
        """The methods a beta or module-group sweep varies: those with a Fisher-ratio mask."""
        return [m for m in self.plan.experiment(benchmark, model)["unlearn"]["methods"]
                if uses_fisher_ratio_mask(get_method(m))]

    def _variants(self, benchmark: str, model: str) -> list[Variant]:
        return [Variant.parse(name) for name in self.plan.variant_names(benchmark, model)]

    def _at_protocol(self, variants: list[Variant]) -> list[Variant]:
        """The variants at their row's protocol point (its first point in sweep order), every seed."""
        protocol: dict[Variant, Variant] = {}
        for v in variants:
            protocol.setdefault(v.row, v.point)
        return [v for v in variants if v.point == protocol[v.row]]

    def _at_reported_mask(self, variants: list[Variant]) -> list[Variant]:
        reported = self.reported_mask()
        return [v for v in variants if v.beta in (None, reported["beta"]) and v.modules in (None, reported["modules"])]

    def frontier_variants(self, benchmark: str, model: str) -> list[str]:
        """Every point (and seed) of every row at the reported mask: the frontier's and the
        equal-forgetting table's candidates."""
        return [v.name for v in self._at_reported_mask(self._variants(benchmark, model))]

    def protocol_variants(self, benchmark: str, model: str) -> list[str]:
        """Table 1's unlearned rows: every row at its protocol point, every seed."""
        return [v.name for v in self._at_protocol(self._at_reported_mask(self._variants(benchmark, model)))]

    def compared_variants(self, benchmark: str, model: str) -> list[str]:
        """One model per row, for the reports that show models one by one (heatmaps, case studies):
        the protocol point's first seed."""
        first: dict[Variant, str] = {}
        for name in self.protocol_variants(benchmark, model):
            first.setdefault(Variant.parse(name).row, name)
        return list(first.values())

    def evaluation_reads(self, benchmark: str, model: str, variant: str) -> str:
        """What the reports read of a variant's evaluation (``StudyPlan.evaluation_flags``):
        ``everything`` for the references and the variants of Table 1, the sweep tables and the case
        studies; ``table`` for a sweep point that only the frontier and the equal-forgetting table
        read (their cells), unless ``evaluation.frontier_points`` is ``full``."""
        if self.plan.config["evaluation"]["frontier_points"] == "full" or not Variant.parse(variant).unlearned:
            return "everything"
        return "everything" if variant in self._shown_in_full(benchmark, model) else "table"

    def _shown_in_full(self, benchmark: str, model: str) -> frozenset[str]:
        """Table 1's and the sweep tables' variants, computed once per experiment (every evaluate
        job of a large sweep asks while Snakemake builds the DAG)."""
        key = (benchmark, model)
        if key not in self._full:
            self._full[key] = frozenset(self.protocol_variants(benchmark, model)).union(
                *(self.sweep_variants(benchmark, model, sweep) for sweep in SWEEPS))
        return self._full[key]

    def sweeps(self) -> list[str]:
        """Sweep tables worth drawing: those whose list has more than one entry."""
        return [sweep for sweep, key in SWEEPS.items() if len(self.saliency[key]) > 1]

    def sweep_variants(self, benchmark: str, model: str, sweep: str) -> list[str]:
        """Masked methods' variants of a sweep table, at their protocol point: over module groups
        at the reported beta, or over betas at the reported module group."""
        reported = self.reported_mask()
        keep = (lambda v: v.beta == reported["beta"]) if sweep == "modules" else (lambda v: v.modules == reported["modules"])
        masked = [v for v in self._variants(benchmark, model) if v.beta is not None and v.control is None and keep(v)]
        return [v.name for v in self._at_protocol(masked)]  # the plan's order: the configured betas and groups

    def sweep_title(self, benchmark: str, model: str, sweep: str, ratio: str) -> str:
        what = "Table 2: module groups" if sweep == "modules" else "Beta sweep"
        labels = ", ".join(get_method(m).label for m in self.masked_methods(benchmark, model))
        return f"{what} of {labels}, {model} on {benchmark}, forget ratio {ratio}%."

    def cells(self, benchmark: str, model: str, ratio, variants) -> dict[str, str]:
        """``--cell`` labels (row group | variant | column group) and the metrics each reads."""
        return {f"{model}|{v}|{benchmark}": artifact("metrics", benchmark=benchmark, model=model, ratio=ratio, variant=v)
                for v in (*REFERENCES, *variants)}

    def _table_cells(self, ratio: str, variants) -> dict[str, str]:
        """A table at one forget ratio: models as row groups, benchmarks as column groups."""
        return {label: path for b, m, r in self.plan.runs() if str(r) == str(ratio)
                for label, path in self.cells(b, m, r, variants(b, m)).items()}

    def table1_cells(self, ratio: str) -> dict[str, str]:
        return self._table_cells(ratio, self.protocol_variants)

    def equal_forgetting_variants(self, benchmark: str, model: str) -> list[str]:
        """The equal-forgetting table's candidates: with ``comparison.calibration``, each row's
        calibrated runs (every seed); without, every frontier point, of which the table picks one."""
        frontier = self.frontier_variants(benchmark, model)
        if not self.plan.config.get("comparison", {}).get("calibration"):
            return frontier
        return [name for name in frontier if Variant.parse(name).calibrated]

    def equal_forgetting_cells(self, ratio: str) -> dict[str, str]:
        return self._table_cells(ratio, self.equal_forgetting_variants)

    def sweep_cells(self, benchmark: str, model: str, ratio: str, sweep: str) -> dict[str, str]:
        return self.cells(benchmark, model, ratio, self.sweep_variants(benchmark, model, sweep))

    def heatmap_panels(self, benchmark: str, model: str) -> tuple[str, ...]:
        return ("mask", *self.compared_variants(benchmark, model))

    def tradeoff_points(self, benchmark: str, model: str) -> dict[str, str]:
        """``ratio|variant`` -> metrics of every frontier point (and the references) at every forget ratio."""
        return {f"{ratio}|{v}": artifact("metrics", benchmark=benchmark, model=model, ratio=ratio, variant=v)
                for ratio in self.plan.experiment(benchmark, model)["forget_ratios"]
                for v in (*REFERENCES, *self.frontier_variants(benchmark, model))}

    # --- attacks ---------------------------------------------------------------------------------

    def attacked_variants(self, benchmark: str, model: str, name: str) -> list[str]:
        """The variants an attack entry runs on: vanilla, the oracle and its scope's unlearned ones."""
        scope = self.plan.attack_scope(benchmark, model, name)
        unlearned = {"protocol": self.protocol_variants, "frontier": self.frontier_variants,
                     "all": self.plan.variant_names}[scope](benchmark, model)
        return [*REFERENCES, *unlearned]

    def attack_files(self, benchmark: str, model: str, ratio, name: str, variant: str) -> list[str]:
        """What an attack leaves of one variant for the reports: its record, and the evaluation of
        the model it produced (metrics and predictions) for a kind that produces one."""
        run = {"benchmark": benchmark, "model": model, "ratio": ratio, "attack": name, "variant": variant}
        files = [artifact("attack", **run)]
        if self.plan.attack_kind(benchmark, model, name).produces_model:
            files += evaluation_files([artifact("attack_metrics", **run)])
        return files

    def robustness_rows(self, benchmark: str, model: str) -> list[str]:
        """The variants the robustness table chooses its rows from: vanilla, the oracle and every
        frontier point (its first seed) that every attack entry attacked; with the default scopes,
        each row's protocol point. A row with several points shows its equal-forgetting point."""
        names = self.plan.attack_names(benchmark, model)
        attacked = set.intersection(*(set(self.attacked_variants(benchmark, model, n)) for n in names))
        first: dict[tuple, str] = {}
        for name in self.frontier_variants(benchmark, model):
            parsed = Variant.parse(name)
            first.setdefault((parsed.row, parsed.point), name)
        return [*REFERENCES, *(v for v in first.values() if v in attacked)]

    def robustness_cells(self, ratio) -> dict[str, str]:
        """``--cell`` labels (model | variant | benchmark | attack, ``-`` for no attack) and the
        file each reads: the unattacked evaluations of Table 1's rows (first seed) and what every
        attack entry left of them."""
        cells = {}
        for benchmark, model, r in self.plan.runs():
            if str(r) != str(ratio) or not self.plan.attack_names(benchmark, model):
                continue
            rows = self.robustness_rows(benchmark, model)
            for variant in rows:
                cells[f"{model}|{variant}|{benchmark}|-"] = artifact("metrics", benchmark=benchmark, model=model,
                                                                     ratio=r, variant=variant)
                for name in self.plan.attack_names(benchmark, model):
                    if variant in self.attacked_variants(benchmark, model, name):
                        run = {"benchmark": benchmark, "model": model, "ratio": r, "attack": name, "variant": variant}
                        kind = "attack_metrics" if self.plan.attack_kind(benchmark, model, name).produces_model else "attack"
                        cells[f"{model}|{variant}|{benchmark}|{name}"] = artifact(kind, **run)
        return cells

    def robustness_inputs(self, ratio) -> list[str]:
        """Every file the robustness table reads: its cells and the files beside them."""
        files = []
        for label, path in self.robustness_cells(ratio).items():
            model, variant, benchmark, name = label.split("|")
            files += (evaluation_files([path]) if name == "-"
                      else self.attack_files(benchmark, model, ratio, name, variant))
        return files

    def attack_outputs(self) -> list[str]:
        """Every attack record and attacked evaluation the config asks for."""
        return [path for benchmark, model, ratio in self.plan.runs() for name in self.plan.attack_names(benchmark, model)
                for variant in self.attacked_variants(benchmark, model, name)
                for path in self.attack_files(benchmark, model, ratio, name, variant)]

    def outputs(self) -> list[str]:
        """Every table and figure of the report stages, for ``rule all``."""
        def files(kind, suffixes, **values):
            return [f"{artifact(kind, **values)}.{suffix}" for suffix in suffixes]

        tables, figures = ("csv", "md", "tex"), ("png", "pdf")
        outputs = [p for ratio in sorted({r for _, _, r in self.plan.runs()})
                   for kind in ("table1", "equal_forgetting") for p in files(kind, tables, ratio=ratio)]
        for benchmark, model, ratio in self.plan.runs():
            run = {"benchmark": benchmark, "model": model, "ratio": ratio}
            outputs += files("layer_heatmap", figures, **run) + [artifact("case_studies", **run)]
            outputs += [p for sweep in self.sweeps() if self.sweep_variants(benchmark, model, sweep)
                        for p in files("sweep_table", tables, sweep=sweep, **run)]
        for entry in self.plan.config["experiments"]:
            outputs += files("tradeoff", figures, benchmark=entry["benchmark"], model=entry["model"])
        outputs += [artifact("instrument", benchmark=b, model=m) for b, m in self.plan.instrumented()]
        attacked = {r for b, m, r in self.plan.runs() if self.plan.attack_names(b, m)}
        outputs += [p for ratio in sorted(attacked) for kind, suffixes in (("robustness", tables),
                    ("robustness_figure", figures)) for p in files(kind, suffixes, ratio=ratio)]
        return outputs
