"""Stage 8: every model variant (base, vanilla, each unlearned one) scored on the six columns of
the paper's Table 1 for its benchmark (MLLMU-Bench: six accuracies; CLEAR: four accuracies and two
ROUGE-L)."""


rule evaluate:
    input:
        model=evaluated_model,
        benchmark="results/{benchmark}/benchmark",
        code=stage_sources("pipeline_steps.evaluate"),
    output:
        metrics="results/{benchmark}/{model}/forget~{ratio}/eval/{variant}/metrics.json",
        predictions="results/{benchmark}/{model}/forget~{ratio}/eval/{variant}/predictions.jsonl",
    params:
        model=evaluated_model_source,
        changes=lambda wc: (
            f"--changes results/{wc.benchmark}/{wc.model}/forget~{wc.ratio}/unlearn/{wc.variant}/weights"
            if wc.variant not in ("base", "vanilla")
            else ""
        ),
        out=subpath(output.metrics, parent=True),
        flags=lambda wc: cli_flags(config["evaluation"]),
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
        " --dtype {params.dtype}"
        " --threads {threads} {params.flags} > {log} 2>&1"
