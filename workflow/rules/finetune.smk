"""Stage 3: fine-tuning: the vanilla model (every fictitious profile) and the reference model (the
retain profiles of one forget ratio only: NPO's frozen model, the model that never saw the forget
profiles)."""


rule finetune_vanilla:
    input:
        base=base_model,
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.finetune"),
    output:
        directory(pattern("vanilla")),
    params:
        base=lambda wc: plan.base_model_source(wc.benchmark, wc.model),
        split="full",
        flags=lambda wc: cli_flags(plan.experiment(wc.benchmark, wc.model)["finetune"]),
        training=lambda wc: plan.training_flags(wc.model),
    threads: threads
    resources:
        gpu=gpu,
    conda:
        "../../environment.yml"
    log:
        "logs/finetune_vanilla/{benchmark}/{model}.log",
    benchmark:
        "logs/timings/finetune_vanilla/{benchmark}/{model}.tsv"
    shell:
        "python -m pipeline_steps.finetune --base {params.base:q} --benchmark {input.benchmark}"
        " --split {params.split} --out {output} {params.training} --threads {threads} {params.flags} > {log} 2>&1"


use rule finetune_vanilla as finetune_reference with:
    output:
        directory(pattern("reference")),
    params:
        split=lambda wc: retain_split(int(wc.ratio)),
    log:
        "logs/finetune_reference/{benchmark}/{model}/forget~{ratio}.log",
    benchmark:
        "logs/timings/finetune_reference/{benchmark}/{model}/forget~{ratio}.tsv"
