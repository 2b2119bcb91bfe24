"""Stage 10: the paper's tables from evaluation results on disk: Table 1 (methods), the module-group
ablation (Table 2) and a beta sweep when several are configured, and case studies (Table 3)."""


rule render_table1:
    input:
        metrics=lambda wc: list(table1_cells(wc).values()),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv="results/tables/table1_forget~{ratio}.csv",
        md=report("results/tables/table1_forget~{ratio}.md", caption="../report/table1.rst", category="Tables",
                  labels={"table": "Table 1", "forget ratio": "{ratio}%"}),
        tex="results/tables/table1_forget~{ratio}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", table1_cells(wc).items()),
        title=lambda wc: f"Table 1: unlearning methods at forget ratio {wc.ratio}%.",
    conda:
        "../../environment.yml"
    log:
        "logs/render_table1/forget~{ratio}.log",
    benchmark:
        "logs/timings/render_table1/forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.render_tables --title {params.title:q} --vary method {params.cells}"
        " --out results/tables/table1_forget~{wildcards.ratio} > {log} 2>&1"


rule render_sweep_table:
    input:
        metrics=lambda wc: list(sweep_cells(wc).values()),
        code=stage_sources("pipeline_steps.render_tables"),
    output:
        csv="results/tables/{benchmark}/{model}/{sweep}_sweep_forget~{ratio}.csv",
        md=report("results/tables/{benchmark}/{model}/{sweep}_sweep_forget~{ratio}.md",
                  caption="../report/sweep_table.rst", category="{benchmark}", subcategory="{model}",
                  labels={"table": "{sweep} sweep", "forget ratio": "{ratio}%"}),
        tex="results/tables/{benchmark}/{model}/{sweep}_sweep_forget~{ratio}.tex",
    params:
        cells=lambda wc: labelled_flags("--cell", sweep_cells(wc).items()),
        title=lambda wc: (f"{'Table 2: module groups' if wc.sweep == 'modules' else 'Beta sweep'} of MMUnlearner, "
                          f"{wc.model} on {wc.benchmark}, forget ratio {wc.ratio}%."),
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
        predictions=lambda wc: [eval_path(wc.benchmark, wc.model, wc.ratio, v, "predictions.jsonl")
                                for v in ("vanilla", *compared_variants(wc.benchmark, wc.model))],
        code=stage_sources("pipeline_steps.render_case_studies"),
    output:
        report("results/tables/{benchmark}/{model}/case_studies_forget~{ratio}.md",
               caption="../report/case_studies.rst", category="{benchmark}", subcategory="{model}",
               labels={"table": "case studies", "forget ratio": "{ratio}%"}),
    params:
        variants=lambda wc: labelled_flags(
            "--variant",
            [(v, eval_path(wc.benchmark, wc.model, wc.ratio, v, "predictions.jsonl"))
             for v in ("vanilla", *compared_variants(wc.benchmark, wc.model))],
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
        " --scoring {params.scoring}"
        " --out {output} > {log} 2>&1"
