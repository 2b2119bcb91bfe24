"""Stage 8b: attacks on the unlearned variants (``pipeline_steps/attacks/``), one job per config
entry of an experiment's ``attacks:`` and attacked variant (vanilla, the oracle and the entry's scope of unlearned
variants: ``study/report_selection.py``). Each loads the variant as its evaluation does; an
attack that produces a model (relearning, quantization) stores it as changes, and the evaluate
stage scores it (``evaluate_attack``: multiple choice under the primary scoring). A job's params
hold only its entry's settings, and its code inputs only its kind's module, so changing or adding
one entry plans only that entry's jobs and the reports."""


rule attack:
    input:
        model=evaluated_model,
        benchmark=pattern("benchmark"),
        code=attack_sources,
    output:
        record=pattern("attack"),
    params:
        kind=lambda wc: plan.attack_kind(wc.benchmark, wc.model, wc.attack).kind,
        settings=lambda wc: json.dumps(plan.attack_settings(wc.benchmark, wc.model, wc.attack), sort_keys=True),
        model=lambda wc: plan.evaluated_model(wc.benchmark, wc.model, wc.ratio, wc.variant),
        changes=lambda wc: (
            f"--changes {artifact('unlearned', wc).removesuffix('.safetensors.index.json')}"
            if Variant.parse(wc.variant).unlearned
            else ""
        ),
        out=subpath(output.record, parent=True),
        batch_size=config["evaluation"]["batch_size"],
        seed=config["evaluation"]["seed"],
        device=device,
        dtype=dtype,
        checkpointing=lambda wc: "--gradient-checkpointing" if plan.model(wc.model).get("gradient_checkpointing") else "",
    threads: threads
    resources:
        gpu=gpu,
    conda:
        "../../environment.yml"
    log:
        "logs/attack/{benchmark}/{model}/forget~{ratio}/{attack}/{variant}.log",
    benchmark:
        "logs/timings/attack/{benchmark}/{model}/forget~{ratio}/{attack}/{variant}.tsv"
    shell:
        "python -m pipeline_steps.attack --kind {params.kind} --name {wildcards.attack} --settings {params.settings:q}"
        " --model {params.model:q} {params.changes} --benchmark {input.benchmark} --forget-ratio {wildcards.ratio}"
        " --out {params.out} --batch-size {params.batch_size} --seed {params.seed} --device {params.device}"
        " --dtype {params.dtype} {params.checkpointing} --threads {threads} > {log} 2>&1"


use rule evaluate as evaluate_attack with:
    input:
        model=lambda wc: plan.evaluated_model(wc.benchmark, wc.model, wc.ratio, wc.variant),
        attack=pattern("attack"),
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.evaluate"),
    output:
        metrics=pattern("attack_metrics"),
        predictions=pattern("attack_predictions"),
    params:
        model=lambda wc: plan.evaluated_model(wc.benchmark, wc.model, wc.ratio, wc.variant),
        changes=lambda wc, input: f"--changes {Path(input.attack).parent / 'weights'}",
        out=subpath(output.metrics, parent=True),
        flags=lambda wc: plan.evaluation_flags(wc.benchmark, "forget"),
        device=device,
        dtype=dtype,
    log:
        "logs/evaluate_attack/{benchmark}/{model}/forget~{ratio}/{attack}/{variant}.log",
    benchmark:
        "logs/timings/evaluate_attack/{benchmark}/{model}/forget~{ratio}/{attack}/{variant}.tsv"
