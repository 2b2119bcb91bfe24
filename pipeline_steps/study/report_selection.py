"""Which variants each report compares: Table 1's rows, the sweep tables', the figures' panels.

One rule for every report: masked methods enter Table 1 and the figures at the *reported mask*
(the first configured beta, module group ``all`` if configured, the paper's main setting), and
the sweep tables vary one of beta or module group at the reported value of the other.
"""

from __future__ import annotations

from ..unlearning.methods import get_method
from .artifacts import path as artifact
from .plan import StudyPlan
from .variants import Variant, beta_label

SWEEPS = {"modules": "module_groups", "beta": "betas"}  # sweep table -> the saliency list it varies


class ReportSelection:
    def __init__(self, plan: StudyPlan):
        self.plan, self.saliency = plan, plan.config["saliency"]

    def reported_mask(self) -> dict[str, str]:
        groups = self.saliency["module_groups"]
        return {"beta": beta_label(self.saliency["betas"][0]), "modules": "all" if "all" in groups else groups[0]}

    def masked_methods(self, benchmark: str, model: str) -> list[str]:
        return [m for m in self.plan.experiment(benchmark, model)["unlearn"]["methods"] if get_method(m).needs_mask]

    def compared_variants(self, benchmark: str, model: str) -> list[str]:
        """Table 1's unlearned rows: every unmasked method, and masked methods at the reported mask."""
        reported = self.reported_mask()
        parsed = [Variant.parse(name) for name in self.plan.variant_names(benchmark, model)]
        return [v.name for v in parsed if v.beta in (None, reported["beta"]) and v.modules in (None, reported["modules"])]

    def sweeps(self) -> list[str]:
        """Sweep tables worth drawing: those whose list has more than one entry."""
        return [sweep for sweep, key in SWEEPS.items() if len(self.saliency[key]) > 1]

    def sweep_variants(self, benchmark: str, model: str, sweep: str) -> list[str]:
        """Masked methods' variants of a sweep table: over module groups at the reported beta, or
        over betas at the reported module group."""
        reported, masked = self.reported_mask(), self.masked_methods(benchmark, model)
        if sweep == "modules":
            return [Variant(m, reported["beta"], g).name for m in masked for g in self.saliency["module_groups"]]
        return [Variant(m, beta_label(b), reported["modules"]).name for m in masked for b in self.saliency["betas"]]

    def sweep_title(self, benchmark: str, model: str, sweep: str, ratio: str) -> str:
        what = "Table 2: module groups" if sweep == "modules" else "Beta sweep"
        labels = ", ".join(get_method(m).label for m in self.masked_methods(benchmark, model))
        return f"{what} of {labels}, {model} on {benchmark}, forget ratio {ratio}%."

    def cells(self, benchmark: str, model: str, ratio, variants) -> dict[str, str]:
        """``--cell`` labels (row group | variant | column group) and the metrics each reads."""
        return {f"{model}|{v}|{benchmark}": artifact("metrics", benchmark=benchmark, model=model, ratio=ratio, variant=v)
                for v in ("vanilla", *variants)}

    def table1_cells(self, ratio: str) -> dict[str, str]:
        """Table 1 at one forget ratio: models as row groups, benchmarks as column groups."""
        return {label: path for b, m, r in self.plan.runs() if str(r) == str(ratio)
                for label, path in self.cells(b, m, r, self.compared_variants(b, m)).items()}

    def sweep_cells(self, benchmark: str, model: str, ratio: str, sweep: str) -> dict[str, str]:
        return self.cells(benchmark, model, ratio, self.sweep_variants(benchmark, model, sweep))

    def heatmap_panels(self, benchmark: str, model: str) -> tuple[str, ...]:
        return ("mask", *self.compared_variants(benchmark, model))

    def tradeoff_points(self, benchmark: str, model: str) -> dict[str, str]:
        """``ratio|variant`` -> metrics of every compared variant at every forget ratio."""
        return {f"{ratio}|{v}": artifact("metrics", benchmark=benchmark, model=model, ratio=ratio, variant=v)
                for ratio in self.plan.experiment(benchmark, model)["forget_ratios"]
                for v in ("vanilla", *self.compared_variants(benchmark, model))}

    def outputs(self) -> list[str]:
        """Every table and figure of the report stages, for ``rule all``."""
        def files(kind, suffixes, **values):
            return [f"{artifact(kind, **values)}.{suffix}" for suffix in suffixes]

        tables, figures = ("csv", "md", "tex"), ("png", "pdf")
        outputs = [p for ratio in sorted({r for _, _, r in self.plan.runs()}) for p in files("table1", tables, ratio=ratio)]
        for benchmark, model, ratio in self.plan.runs():
            run = {"benchmark": benchmark, "model": model, "ratio": ratio}
            outputs += files("layer_heatmap", figures, **run) + [artifact("case_studies", **run)]
            outputs += [p for sweep in self.sweeps() if self.sweep_variants(benchmark, model, sweep)
                        for p in files("sweep_table", tables, sweep=sweep, **run)]
        for entry in self.plan.config["experiments"]:
            outputs += files("tradeoff", figures, benchmark=entry["benchmark"], model=entry["model"])
        outputs += [artifact("instrument", benchmark=b, model=m) for b, m in self.plan.instrumented()]
        return outputs
