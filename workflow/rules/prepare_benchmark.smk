"""Stage 1: the benchmark, as canonical records (synthetic benchmarks are generated first)."""


rule synthesize_benchmark:
    input:
        code=stage_sources("pipeline_steps.synthesize_benchmark"),
    output:
        directory("results/{benchmark}/raw"),
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
        raw=lambda wc: (
            f"results/{wc.benchmark}/raw"
            if "synthetic" in config["benchmarks"][wc.benchmark]
            else []
        ),
        checks=preflight_checks,
        code=stage_sources("pipeline_steps.prepare_benchmark"),
    output:
        directory("results/{benchmark}/benchmark"),
    params:
        format=lambda wc: config["benchmarks"][wc.benchmark]["format"],
        source=lambda wc: benchmark_source(wc.benchmark),
        seed=lambda wc: benchmark_seed(wc.benchmark),
    conda:
        "../../environment.yml"
    log:
        "logs/prepare_benchmark/{benchmark}.log",
    benchmark:
        "logs/timings/prepare_benchmark/{benchmark}.tsv"
    shell:
        "python -m pipeline_steps.prepare_benchmark --format {params.format} --source {params.source:q}"
        " --seed {params.seed} --out {output} > {log} 2>&1"
