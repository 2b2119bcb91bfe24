"""Stage 10: the tables from evaluation results on disk: Table 1 (methods at the paper's protocol),
the equal-forgetting table (each method at its calibrated point, or the sweep point the config's
rule picks), the
module-group ablation (Table 2) and a beta sweep when several are configured, and case studies
(Table 3). Each reads the metrics and per-item predictions of the variants it compares (every seed,
for the intervals); which those are: ``pipeline_steps/study/report_selection.py``."""


rule render_table1:
    input:
        evaluations=lambda wc: evaluation_files(list(reports.table1_cells(wc.ratio).values())),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv=f"{pattern('table1')}.csv",
        md=report(f"{pattern('table1')}.md", caption="../report/table1.rst", category="Tables",
                  labels={"table": "Table 1", "forget ratio": "{ratio}%"}),
        tex=f"{pattern('table1')}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", reports.table1_cells(wc.ratio).items()),
        title=lambda wc: f"Table 1: unlearning methods at the paper's protocol (shared settings), forget ratio {wc.ratio}%.",
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


rule render_equal_forgetting:
    input:
        evaluations=lambda wc: evaluation_files(list(reports.equal_forgetting_cells(wc.ratio).values())),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv=f"{pattern('equal_forgetting')}.csv",
        md=report(f"{pattern('equal_forgetting')}.md", caption="../report/equal_forgetting.rst", category="Tables",
                  labels={"table": "equal forgetting", "forget ratio": "{ratio}%"}),
        tex=f"{pattern('equal_forgetting')}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", reports.equal_forgetting_cells(wc.ratio).items()),
        title=lambda wc: (f"Equal forgetting: each method unlearned until its Forget VQA reaches the oracle's, forget ratio {wc.ratio}%."
                          if config["comparison"].get("calibration") else
                          f"Equal forgetting: each method at its sweep point nearest the oracle, forget ratio {wc.ratio}%."),
        tolerance=config["comparison"]["forget_tolerance"],
        stem=subpath(output.csv, strip_suffix=".csv"),
    conda:
        "../../environment.yml"
    log:
        "logs/render_equal_forgetting/forget~{ratio}.log",
    benchmark:
        "logs/timings/render_equal_forgetting/forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.render_tables --title {params.title:q} --equal-forgetting {params.tolerance}"
        " {params.cells} --out {params.stem} > {log} 2>&1"


rule render_sweep_table:
    input:
        evaluations=lambda wc: evaluation_files(list(reports.sweep_cells(wc.benchmark, wc.model, wc.ratio, wc.sweep).values())),
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
