"""Stage 0: the environment check of a real run (hub or local model, or hub benchmark), before its
first job: is the benchmark reachable or cached, is the model, is there a GPU that holds it at the
configured precision. ``prepare_benchmark`` waits for it, so nothing downloads or trains before it
has passed; pipeline_steps/check_environment.py explains why this is a job and not a parse-time check."""


def environment_check_flags(wildcards):
    """What to check for one experiment, and what will run (the memory estimate needs both)."""
    entry = experiment(wildcards.benchmark, wildcards.model)
    benchmark, model = config["benchmarks"][wildcards.benchmark], model_settings(wildcards.model)
    methods = entry["unlearn"]["methods"]
    flags = {"benchmark_name": wildcards.benchmark, "format": benchmark["format"], "model_name": wildcards.model,
             "device": model["device"], "dtype": model["dtype"], "finetune_lora_r": entry["finetune"]["lora_r"],
             "finetune_batch_size": entry["finetune"]["batch_size"], "fisher_batch_size": config["saliency"]["batch_size"],
             "unlearn_batch_size": max(method_settings(m, entry["unlearn"])["loop"]["batch_size"] for m in methods),
             "eval_batch_size": config["evaluation"]["batch_size"], "methods": methods,
             "gradient_checkpointing": model.get("gradient_checkpointing", False),
             "unlearn_gpus": model.get("unlearn_gpus", 1)}
    sources = []
    if "synthetic" not in benchmark:
        flags["forget_ratios"] = entry["forget_ratios"]
        sources.append(source_flags(benchmark, "dataset-"))
    if not is_tiny(wildcards.model):
        sources.append(source_flags(model, "model-"))
    return " ".join([cli_flags(flags), *sources])


rule check_environment:
    input:
        code=stage_sources("pipeline_steps.check_environment"),
    output:
        pattern("environment_check"),
    params:
        flags=environment_check_flags,
    threads: 1
    resources:
        gpu=lambda wc: gpus(wc.model),
    conda:
        "../../environment.yml"
    log:
        "logs/check_environment/{benchmark}/{model}.log",
    benchmark:
        "logs/timings/check_environment/{benchmark}/{model}.tsv"
    shell:
        # The findings also go to the terminal, not only to the log: they are what the user must fix.
        "python -m pipeline_steps.check_environment {params.flags} --out {output} > {log} 2>&1"
        " || {{ tail -n 40 {log} >&2; exit 1; }}"
