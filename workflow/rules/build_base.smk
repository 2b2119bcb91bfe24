"""Stage 2: tiny base models, built and pretrained (hub models skip this stage)."""


rule build_base:
    input:
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.build_base"),
    output:
        directory(pattern("base")),
    params:
        flags=lambda wc: plan.tiny_flags(wc.model),
        device=device,
    threads: pretrain_threads
    resources:
        gpu=gpu,
    conda:
        "../../environment.yml"
    log:
        "logs/build_base/{benchmark}/{model}.log",
    benchmark:
        "logs/timings/build_base/{benchmark}/{model}.tsv"
    shell:
        "python -m pipeline_steps.build_base --benchmark {input.benchmark} --out {output}"
        " --device {params.device} --threads {threads} {params.flags} > {log} 2>&1"
