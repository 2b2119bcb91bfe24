"""Stage 9: where each method moved the model, counted by layer and module (input of the heatmaps)."""


rule locate_changes:
    input:
        vanilla=pattern("vanilla"),
        mask_stats=lambda wc: artifact("mask_stats", wc, **reports.reported_mask()),
        changes=lambda wc: [] if wc.variant == "mask" else artifact("unlearned", wc),
        code=stage_sources("pipeline_steps.locate_changes"),
    output:
        pattern("changes"),
    params:
        changes=lambda wc, input: f"--changes {input.changes}" if input.changes else "",
    conda:
        "../../environment.yml"
    log:
        "logs/locate_changes/{benchmark}/{model}/forget~{ratio}/{variant}.log",
    benchmark:
        "logs/timings/locate_changes/{benchmark}/{model}/forget~{ratio}/{variant}.tsv"
    shell:
        "python -m pipeline_steps.locate_changes --vanilla {input.vanilla} --mask-stats {input.mask_stats}"
        " {params.changes} --variant {wildcards.variant:q} --out {output} > {log} 2>&1"
