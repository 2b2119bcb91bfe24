"""Stage 8: every model variant (base, vanilla, the oracle, each unlearned one) scored on the six columns of
the paper's Table 1 for its benchmark (MLLMU-Bench: six accuracies; CLEAR: four accuracies and two
ROUGE-L)."""


rule evaluate:
    input:
        model=evaluated_model,
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.evaluate"),
    output:
        metrics=pattern("metrics"),
        predictions=pattern("predictions"),
    params:
        model=lambda wc: plan.evaluated_model(wc.benchmark, wc.model, wc.ratio, wc.variant),
        changes=lambda wc: (
            f"--changes {artifact('unlearned', wc).removesuffix('.safetensors.index.json')}"
            if Variant.parse(wc.variant).unlearned
            else ""
        ),
        out=subpath(output.metrics, parent=True),
        flags=lambda wc: plan.evaluation_flags(wc.benchmark, reports.evaluation_reads(wc.benchmark, wc.model, wc.variant)),
        device=device,
        dtype=dtype,
    threads: threads
    resources:
        gpu=gpu,
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
