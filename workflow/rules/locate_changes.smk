"""Stage 9: where each method moved the model, counted by layer and module (input of the heatmaps)."""


rule locate_changes:
    input:
        vanilla="results/{benchmark}/{model}/vanilla",
        mask_stats=lambda wc: "results/{}/{}/forget~{}/masks/beta~{}/modules~{}/mask_stats.json".format(
            wc.benchmark, wc.model, wc.ratio, *reference_mask()
        ),
        changes=lambda wc: (
            []
            if wc.variant == "mask"
            else f"results/{wc.benchmark}/{wc.model}/forget~{wc.ratio}/unlearn/{wc.variant}/weights.safetensors.index.json"
        ),
        code=stage_sources("pipeline_steps.locate_changes"),
    output:
        "results/{benchmark}/{model}/forget~{ratio}/changes/{variant}.json",
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
