"""Stage 10: the paper's tables from evaluation results on disk: Table 1 (methods), the module-group
ablation (Table 2) and a beta sweep when several are configured, and case studies (Table 3).
Which variants each compares: ``pipeline_steps/study/report_selection.py``."""


rule render_table1:
    input:
        metrics=lambda wc: list(reports.table1_cells(wc.ratio).values()),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv=f"{pattern('table1')}.csv",
        md=report(f"{pattern('table1')}.md", caption="../report/table1.rst", category="Tables",
                  labels={"table": "Table 1", "forget ratio": "{ratio}%"}),
        tex=f"{pattern('table1')}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", reports.table1_cells(wc.ratio).items()),
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
        metrics=lambda wc: list(reports.sweep_cells(wc.benchmark, wc.model, wc.ratio, wc.sweep).values()),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv=f"{pattern('sweep_table')}.csv",
        md=report(f"{pattern('sweep_table')}.md", caption="../report/sweep_table.rst", category="{benchmark}",
                  subcategory="{model}", labels={"table": "{sweep} sweep", "forget ratio": "{ratio}%"}),
        tex=f"{pattern('sweep_table')}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", reports.sweep_cells(wc.benchmark, wc.model, wc.ratio, wc.sweep).items()),
        title=lambda wc: reports.sweep_title(wc.benchmark, wc.model, wc.sweep, wc.ratio),
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
                                for v in ("vanilla", *reports.compared_variants(wc.benchmark, wc.model))],
        code=stage_sources("pipeline_steps.render_case_studies"),
    output:
        report(pattern("case_studies"), caption="../report/case_studies.rst", category="{benchmark}",
               subcategory="{model}", labels={"table": "case studies", "forget ratio": "{ratio}%"}),
    params:
        variants=lambda wc, input: labelled_flags(
            "--variant", zip(("vanilla", *reports.compared_variants(wc.benchmark, wc.model)), input.predictions)
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
