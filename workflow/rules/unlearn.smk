"""Stage 7: unlearning, one job per forget ratio and method (and beta and module group for
MMUnlearner), from the vanilla model."""


rule unlearn:
    input:
        vanilla="results/{benchmark}/{model}/vanilla",
        benchmark="results/{benchmark}/benchmark",
        mask=lambda wc: unlearn_mask(wc),
        reference=lambda wc: unlearn_reference(wc),
        code=stage_sources("pipeline_steps.unlearn"),
    output:
        weights="results/{benchmark}/{model}/forget~{ratio}/unlearn/{variant}/weights.safetensors.index.json",
        log="results/{benchmark}/{model}/forget~{ratio}/unlearn/{variant}/train_log.jsonl",
        manifest="results/{benchmark}/{model}/forget~{ratio}/unlearn/{variant}/manifest.json",
    params:
        out=subpath(output.manifest, parent=True),
        method=lambda wc: variant_method(wc.variant),
        mask=lambda wc, input: f"--mask {subpath(input.mask[0], parent=True)}" if input.mask else "",
        reference=lambda wc, input: f"--reference {input.reference[0]}" if input.reference else "",
        flags=lambda wc: cli_flags(unlearn_settings(wc)),
        training=lambda wc: training_flags(wc.model),
        launch=lambda wc: unlearn_launcher(wc.model),
    threads: lambda wc: model_settings(wc.model)["threads"]
    resources:
        gpu=lambda wc: gpus(wc.model, unlearn_processes(wc.model)),
    conda:
        "../../environment.yml"
    log:
        "logs/unlearn/{benchmark}/{model}/forget~{ratio}/{variant}.log",
    benchmark:
        "logs/timings/unlearn/{benchmark}/{model}/forget~{ratio}/{variant}.tsv"
    shell:
        "{params.launch} pipeline_steps.unlearn --vanilla {input.vanilla} --benchmark {input.benchmark}"
        " --forget-ratio {wildcards.ratio} --method {params.method} {params.mask} {params.reference}"
        " --out {params.out} {params.training} --threads {threads}"
        " {params.flags} > {log} 2>&1"
