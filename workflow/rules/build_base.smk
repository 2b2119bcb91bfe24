"""Stage 2: tiny base models, built and pretrained (hub models skip this stage)."""


def tiny_flags(model):
    tiny = model_settings(model)["tiny"]
    return cli_flags({"family": tiny["family"], "seed": tiny["seed"], **tiny["architecture"], **tiny["pretrain"]})


rule build_base:
    input:
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.build_base"),
    output:
        directory(pattern("base")),
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
