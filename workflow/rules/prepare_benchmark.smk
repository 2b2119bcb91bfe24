"""Stage 1: the benchmark, as canonical records (synthetic benchmarks are generated first)."""


rule synthesize_benchmark:
    input:
        code=stage_sources("pipeline_steps.synthesize_benchmark"),
    output:
        directory(pattern("raw_benchmark")),
    params:
        flags=lambda wc: cli_flags(config["benchmarks"][wc.benchmark]["synthetic"]),
    conda:
        "../../environment.yml"
    log:
        "logs/synthesize_benchmark/{benchmark}.log",
    benchmark:
        "logs/timings/synthesize_benchmark/{benchmark}.tsv"
    shell:
        "python -m pipeline_steps.synthesize_benchmark --out {output} {params.flags} > {log} 2>&1"


rule prepare_benchmark:
    input:
        raw=lambda wc: artifact("raw_benchmark", wc) if "synthetic" in config["benchmarks"][wc.benchmark] else [],
        checks=environment_checks,
        code=stage_sources("pipeline_steps.prepare_benchmark"),
    output:
        directory(pattern("benchmark")),
    params:
        format=lambda wc: config["benchmarks"][wc.benchmark]["format"],
        source=lambda wc: plan.benchmark_source_flags(wc.benchmark),
        seed=lambda wc: config["benchmarks"][wc.benchmark].get("seed", 0),
    conda:
        "../../environment.yml"
    log:
        "logs/prepare_benchmark/{benchmark}.log",
    benchmark:
        "logs/timings/prepare_benchmark/{benchmark}.tsv"
    shell:
        "python -m pipeline_steps.prepare_benchmark --format {params.format} {params.source}"
        " --seed {params.seed} --out {output} > {log} 2>&1"
