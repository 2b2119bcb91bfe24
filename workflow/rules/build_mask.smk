"""Stage 6: saliency masks, one job per forget ratio, beta and module group; and the control masks
of each (``saliency.controls``: as many entries of every tensor, picked at random or by gradient
magnitude), which tell what MMUnlearner owes to the Fisher ratio's choice of entries; and SalUn's
masks, one per forget ratio and mask fraction, from the summed forget gradient."""


rule build_mask:
    input:
        target=lambda wc: saliency_fisher_files(wc, "target"),
        preserve=lambda wc: saliency_fisher_files(wc, "preserve"),
        preserve_vision=lambda wc: saliency_fisher_files(wc, "preserve_vision"),
        code=stage_sources("pipeline_steps.build_mask"),
    output:
        mask=pattern("mask"),
        stats=pattern("mask_stats"),
    params:
        out=subpath(output.stats, parent=True),
        preserve_vision=lambda wc, input: (
            f"--preserve-vision {' '.join(input.preserve_vision)}" if input.preserve_vision else ""
        ),
        max_shard_gb=config["saliency"]["max_shard_gb"],
    conda:
        "../../environment.yml"
    log:
        "logs/build_mask/{benchmark}/{model}/forget~{ratio}/beta~{beta}/{modules}.log",
    benchmark:
        "logs/timings/build_mask/{benchmark}/{model}/forget~{ratio}/beta~{beta}/{modules}.tsv"
    shell:
        "python -m pipeline_steps.build_mask --target {input.target} --preserve {input.preserve}"
        " {params.preserve_vision} --beta {wildcards.beta} --modules {wildcards.modules}"
        " --max-shard-gb {params.max_shard_gb} --out {params.out} > {log} 2>&1"


rule build_control_mask:
    input:
        like=pattern("mask"),
        target=lambda wc: saliency_fisher_files(wc, "target"),
        code=stage_sources("pipeline_steps.build_mask"),
    output:
        mask=pattern("control_mask"),
        stats=pattern("control_mask_stats"),
    params:
        like=subpath(input.like, parent=True),
        out=subpath(output.stats, parent=True),
        max_shard_gb=config["saliency"]["max_shard_gb"],
    conda:
        "../../environment.yml"
    log:
        "logs/build_control_mask/{benchmark}/{model}/forget~{ratio}/beta~{beta}/{modules}/{control}.log",
    benchmark:
        "logs/timings/build_control_mask/{benchmark}/{model}/forget~{ratio}/beta~{beta}/{modules}/{control}.tsv"
    shell:
        "python -m pipeline_steps.build_mask --control {wildcards.control} --like {params.like} --target {input.target}"
        " --max-shard-gb {params.max_shard_gb} --out {params.out} > {log} 2>&1"


rule build_salun_mask:
    input:
        target=lambda wc: artifact("gradient", wc, split=config["saliency"]["target"]),
        code=stage_sources("pipeline_steps.build_mask"),
    output:
        mask=pattern("salun_mask"),
        stats=pattern("salun_mask_stats"),
    params:
        out=subpath(output.stats, parent=True),
        max_shard_gb=config["saliency"]["max_shard_gb"],
    conda:
        "../../environment.yml"
    log:
        "logs/build_salun_mask/{benchmark}/{model}/forget~{ratio}/fraction~{fraction}.log",
    benchmark:
        "logs/timings/build_salun_mask/{benchmark}/{model}/forget~{ratio}/fraction~{fraction}.tsv"
    shell:
        "python -m pipeline_steps.build_mask --salun {wildcards.fraction} --target {input.target}"
        " --max-shard-gb {params.max_shard_gb} --out {params.out} > {log} 2>&1"
