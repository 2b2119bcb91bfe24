"""Stage 2: tiny base models, built and pretrained (hub models skip this stage)."""


rule build_base:
    input:
        benchmark="results/{benchmark}/benchmark",
        code=stage_sources("pipeline_steps.build_base"),
    output:
        directory("results/{benchmark}/{model}/base"),
    params:
        flags=lambda wc: tiny_flags(wc.model),
        device=lambda wc: model_settings(wc.model)["device"],
    threads: lambda wc: model_settings(wc.model)["threads"]
    resources:
        gpu=lambda wc: gpus(wc.model),
    conda:
        "../../environment.yml"
    log:
        "logs/build_base/{benchmark}/{model}.log",
    benchmark:
        "logs/timings/build_base/{benchmark}/{model}.tsv"
    shell:
        "python -m pipeline_steps.build_base --benchmark {input.benchmark} --out {output}"
        " --device {params.device} --threads {threads} {params.flags} > {log} 2>&1"
