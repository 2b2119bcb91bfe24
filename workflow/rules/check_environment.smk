"""Stage 0: the environment check of a real run (hub or local model, or hub benchmark), before its
first job: is the benchmark reachable or cached, is the model, is there a GPU that holds it at the
configured precision. ``prepare_benchmark`` waits for it, so nothing downloads or trains before it
has passed; pipeline_steps/check_environment.py explains why this is a job and not a parse-time check."""


rule check_environment:
    input:
        code=stage_sources("pipeline_steps.check_environment"),
    output:
        pattern("environment_check"),
    params:
        flags=lambda wc: plan.environment_check_flags(wc.benchmark, wc.model),
    threads: 1
    resources:
        gpu=gpu,
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
