"""Stage 10: the paper's tables from evaluation results on disk: Table 1 (methods), the module-group
ablation (Table 2) and a beta sweep when several are configured, and case studies (Table 3).

Which variants each report compares is chosen here, beside the report rules."""


def reported_mask():
    """The mask at which masked methods enter Table 1 and the figures, and whose size sets n in the
    heatmaps: the first configured beta, module group ``all`` if configured (the paper's main
    setting), else the first one."""
    groups = config["saliency"]["module_groups"]
    return {"beta": beta_label(config["saliency"]["betas"][0]), "modules": "all" if "all" in groups else groups[0]}


def compared_variants(benchmark, model):
    """Table 1's unlearned rows: every unmasked method, and masked methods at the reported mask."""
    reported = reported_mask()
    return [name for name in variant_names(benchmark, model)
            if Variant.parse(name).beta in (None, reported["beta"])
            and Variant.parse(name).modules in (None, reported["modules"])]


SWEEPS = {"modules": "module_groups", "beta": "betas"}  # sweep table -> the saliency list it varies


def sweep_variants(benchmark, model, sweep):
    """Masked methods' variants of a sweep table: over module groups at the reported beta, or over
    betas at the reported module group."""
    reported, saliency = reported_mask(), config["saliency"]
    masked = [m for m in experiment(benchmark, model)["unlearn"]["methods"] if get_method(m).needs_mask]
    if sweep == "modules":
        return [Variant(m, reported["beta"], g).name for m in masked for g in saliency["module_groups"]]
    return [Variant(m, beta_label(b), reported["modules"]).name for m in masked for b in saliency["betas"]]


def sweeps():
    """Sweep tables worth drawing: those whose list has more than one entry."""
    return [sweep for sweep, key in SWEEPS.items() if len(config["saliency"][key]) > 1]


def cells(benchmark, model, ratio, variants):
    """``--cell`` labels (row group, variant, column group) and the metrics each reads."""
    return {f"{model}|{v}|{benchmark}": artifact("metrics", benchmark=benchmark, model=model, ratio=ratio, variant=v)
            for v in ("vanilla", *variants)}


def table1_cells(wildcards):
    """Table 1 at one forget ratio: models as row groups, benchmarks as column groups."""
    return {label: path for b, m, r in runs() if str(r) == wildcards.ratio
            for label, path in cells(b, m, r, compared_variants(b, m)).items()}


def report_outputs():
    """Every table and figure of the report stages, for ``rule all``."""
    tables = lambda kind, **values: [f"{artifact(kind, **values)}.{s}" for s in ("csv", "md", "tex")]
    figure = lambda kind, **values: [f"{artifact(kind, **values)}.{s}" for s in ("png", "pdf")]
    outputs = [path for ratio in sorted({r for _, _, r in runs()}) for path in tables("table1", ratio=ratio)]
    for benchmark, model, ratio in runs():
        run = {"benchmark": benchmark, "model": model, "ratio": ratio}
        outputs += figure("layer_heatmap", **run) + [artifact("case_studies", **run)]
        outputs += [path for sweep in sweeps() if sweep_variants(benchmark, model, sweep)
                    for path in tables("sweep_table", sweep=sweep, **run)]
    for entry in config["experiments"]:
        outputs += figure("tradeoff", benchmark=entry["benchmark"], model=entry["model"])
    return outputs


rule render_table1:
    input:
        metrics=lambda wc: list(table1_cells(wc).values()),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv=f"{pattern('table1')}.csv",
        md=report(f"{pattern('table1')}.md", caption="../report/table1.rst", category="Tables",
                  labels={"table": "Table 1", "forget ratio": "{ratio}%"}),
        tex=f"{pattern('table1')}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", table1_cells(wc).items()),
        title=lambda wc: f"Table 1: unlearning methods at forget ratio {wc.ratio}%.",
        stem=subpath(output.csv, strip_suffix=".csv"),
    conda:
        "../../environment.yml"
    log:
        "logs/render_table1/forget~{ratio}.log",
    benchmark:
        "logs/timings/render_table1/forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.render_tables --title {params.title:q} --vary method {params.cells}"
        " --out {params.stem} > {log} 2>&1"


rule render_sweep_table:
    input:
        metrics=lambda wc: list(cells(wc.benchmark, wc.model, wc.ratio,
                                      sweep_variants(wc.benchmark, wc.model, wc.sweep)).values()),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv=f"{pattern('sweep_table')}.csv",
        md=report(f"{pattern('sweep_table')}.md", caption="../report/sweep_table.rst", category="{benchmark}",
                  subcategory="{model}", labels={"table": "{sweep} sweep", "forget ratio": "{ratio}%"}),
        tex=f"{pattern('sweep_table')}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", cells(wc.benchmark, wc.model, wc.ratio,
                                                        sweep_variants(wc.benchmark, wc.model, wc.sweep)).items()),
        title=lambda wc: "{} of {}, {} on {}, forget ratio {}%.".format(
            "Table 2: module groups" if wc.sweep == "modules" else "Beta sweep",
            ", ".join(get_method(m).label for m in experiment(wc.benchmark, wc.model)["unlearn"]["methods"]
                      if get_method(m).needs_mask), wc.model, wc.benchmark, wc.ratio),
        stem=subpath(output.csv, strip_suffix=".csv"),
    conda:
        "../../environment.yml"
    log:
        "logs/render_sweep_table/{benchmark}/{model}/{sweep}_forget~{ratio}.log",
    benchmark:
        "logs/timings/render_sweep_table/{benchmark}/{model}/{sweep}_forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.render_tables --title {params.title:q} --vary {wildcards.sweep} {params.cells}"
        " --out {params.stem} > {log} 2>&1"


rule render_case_studies:
    input:
        predictions=lambda wc: [artifact("predictions", wc, variant=v)
                                for v in ("vanilla", *compared_variants(wc.benchmark, wc.model))],
        code=stage_sources("pipeline_steps.render_case_studies"),
    output:
        report(pattern("case_studies"), caption="../report/case_studies.rst", category="{benchmark}",
               subcategory="{model}", labels={"table": "case studies", "forget ratio": "{ratio}%"}),
    params:
        variants=lambda wc, input: labelled_flags(
            "--variant", zip(("vanilla", *compared_variants(wc.benchmark, wc.model)), input.predictions)
        ),
        title=lambda wc: f"Case studies: {wc.model} on {wc.benchmark}, forget ratio {wc.ratio}%",
        scoring=config["evaluation"]["primary"],
    conda:
        "../../environment.yml"
    log:
        "logs/render_case_studies/{benchmark}/{model}/forget~{ratio}.log",
    benchmark:
        "logs/timings/render_case_studies/{benchmark}/{model}/forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.render_case_studies --title {params.title:q} {params.variants}"
        " --scoring {params.scoring} --out {output} > {log} 2>&1"
