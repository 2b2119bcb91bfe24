"""Stage 8: every model variant (base, vanilla, each unlearned one) scored on the six columns of
the paper's Table 1 for its benchmark (MLLMU-Bench: six accuracies; CLEAR: four accuracies and two
ROUGE-L)."""


def evaluated_model(wildcards):
    """The files a variant's evaluation reads: the base model, the vanilla model, or the vanilla
    model and an unlearned variant's changes."""
    if wildcards.variant == "base":
        return base_model(wildcards)
    if wildcards.variant == "vanilla":
        return artifact("vanilla", wildcards)
    return [artifact("vanilla", wildcards), artifact("unlearned", wildcards)]


rule evaluate:
    input:
        model=evaluated_model,
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.evaluate"),
    output:
        metrics=pattern("metrics"),
        predictions=pattern("predictions"),
    params:
        model=lambda wc: base_model_source(wc) if wc.variant == "base" else artifact("vanilla", wc),
        changes=lambda wc: (
            f"--changes {artifact('unlearned', wc).removesuffix('.safetensors.index.json')}"
            if Variant.parse(wc.variant).unlearned
            else ""
        ),
        out=subpath(output.metrics, parent=True),
        flags=cli_flags(config["evaluation"]),
        device=lambda wc: model_settings(wc.model)["device"],
        dtype=lambda wc: model_settings(wc.model)["dtype"],
    threads: lambda wc: model_settings(wc.model)["threads"]
    resources:
        gpu=lambda wc: gpus(wc.model),
    conda:
        "../../environment.yml"
    log:
        "logs/evaluate/{benchmark}/{model}/forget~{ratio}/{variant}.log",
    benchmark:
        "logs/timings/evaluate/{benchmark}/{model}/forget~{ratio}/{variant}.tsv"
    shell:
        "python -m pipeline_steps.evaluate --model {params.model:q} --benchmark {input.benchmark}"
        " {params.changes} --forget-ratio {wildcards.ratio} --out {params.out} --device {params.device}"
        " --dtype {params.dtype} --threads {threads} {params.flags} > {log} 2>&1"
