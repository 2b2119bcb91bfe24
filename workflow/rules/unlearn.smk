"""Stage 7: unlearning, one job per forget ratio and method (and beta and module group for
masked methods), from the vanilla model. A job's params hold only its own method's settings, so
changing one method's settings reruns that method's jobs and what follows, no other's."""


rule unlearn:
    input:
        unpack(lambda wc: plan.unlearn_inputs(wc.benchmark, wc.model, wc.ratio, wc.variant)),
        vanilla=pattern("vanilla"),
        benchmark=pattern("benchmark"),
        code=unlearn_sources,
    output:
        weights=pattern("unlearned"),
        log=pattern("unlearn_log"),
        manifest=pattern("unlearn_manifest"),
    params:
        out=subpath(output.manifest, parent=True),
        flags=lambda wc: plan.unlearn_flags(wc.benchmark, wc.model, wc.ratio, wc.variant),
        training=lambda wc: plan.training_flags(wc.model),
        launch=unlearn_launcher,
    threads: threads
    resources:
        gpu=lambda wc: plan.unlearn_job_gpus(wc.benchmark, wc.model, wc.variant),
    conda:
        "../../environment.yml"
    log:
        "logs/unlearn/{benchmark}/{model}/forget~{ratio}/{variant}.log",
    benchmark:
        "logs/timings/unlearn/{benchmark}/{model}/forget~{ratio}/{variant}.tsv"
    shell:
        "{params.launch} pipeline_steps.unlearn --vanilla {input.vanilla} --benchmark {input.benchmark}"
        " --forget-ratio {wildcards.ratio} --out {params.out} {params.training} --threads {threads}"
        " {params.flags} > {log} 2>&1"
