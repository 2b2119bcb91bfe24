"""Stage 3: the vanilla model, the base fine-tuned with LoRA on every fictitious profile."""


rule finetune_vanilla:
    input:
        base=base_model,
        benchmark="results/{benchmark}/benchmark",
        code=stage_sources("pipeline_steps.finetune"),
    output:
        directory("results/{benchmark}/{model}/vanilla"),
    params:
        base=lambda wc: base_model_source(wc.model, wc.benchmark),
        flags=lambda wc: cli_flags(experiment(wc.benchmark, wc.model)["finetune"]),
        device=lambda wc: model_settings(wc.model)["device"],
        dtype=lambda wc: model_settings(wc.model)["dtype"],
    threads: lambda wc: model_settings(wc.model)["threads"]
    resources:
        gpu=lambda wc: gpus(wc.model),
    conda:
        "../../environment.yml"
    log:
        "logs/finetune_vanilla/{benchmark}/{model}.log",
    benchmark:
        "logs/timings/finetune_vanilla/{benchmark}/{model}.tsv"
    shell:
        "python -m pipeline_steps.finetune --base {params.base:q} --benchmark {input.benchmark} --split full"
        " --out {output} --device {params.device} --dtype {params.dtype} --threads {threads}"
        " {params.flags} > {log} 2>&1"
