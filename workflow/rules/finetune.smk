"""Stage 3: fine-tuning: the vanilla model (every fictitious profile) and NPO's reference model
(the retain profiles of one forget ratio only)."""


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
        training=lambda wc: training_flags(wc.model),
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
        " --out {output} {params.training} --threads {threads}"
        " {params.flags} > {log} 2>&1"


rule finetune_reference:
    input:
        base=base_model,
        benchmark="results/{benchmark}/benchmark",
        code=stage_sources("pipeline_steps.finetune"),
    output:
        directory("results/{benchmark}/{model}/forget~{ratio}/reference"),
    params:
        base=lambda wc: base_model_source(wc.model, wc.benchmark),
        split=lambda wc: f"retain_{100 - int(wc.ratio)}",
        flags=lambda wc: cli_flags(experiment(wc.benchmark, wc.model)["finetune"]),
        training=lambda wc: training_flags(wc.model),
    threads: lambda wc: model_settings(wc.model)["threads"]
    resources:
        gpu=lambda wc: gpus(wc.model),
    conda:
        "../../environment.yml"
    log:
        "logs/finetune_reference/{benchmark}/{model}/forget~{ratio}.log",
    benchmark:
        "logs/timings/finetune_reference/{benchmark}/{model}/forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.finetune --base {params.base:q} --benchmark {input.benchmark}"
        " --split {params.split} --out {output} {params.training}"
        " --threads {threads} {params.flags} > {log} 2>&1"
