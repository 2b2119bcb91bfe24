"""Stage 7: unlearning, one job per forget ratio and method (and beta and module group for
masked methods), from the vanilla model. A job's params hold only its own method's settings, so
changing one method's settings reruns that method's jobs and what follows, no other's."""


def unlearn_inputs(wildcards):
    """What a method's job reads besides the vanilla model: its mask, its frozen retain-set model."""
    variant, (method, _) = Variant.parse(wildcards.variant), unlearn_job(wildcards)
    inputs = {}
    if method.needs_mask:
        inputs["mask"] = artifact("mask", wildcards, beta=variant.beta, modules=variant.modules)
    if method.frozen_model == "retain_finetuned":
        inputs["reference"] = artifact("reference", wildcards)
    return inputs


def unlearn_flags(wildcards, input):
    method, settings = unlearn_job(wildcards)
    flags = [f"--method {method.name}", cli_flags(settings["loop"]), hyperparameter_flags(settings["hyperparameters"])]
    if "mask" in input.keys():
        flags.append(f"--mask {Path(input.mask).parent}")
    if "reference" in input.keys():
        flags.append(f"--reference {input.reference}")
    return " ".join(flags)


def unlearn_launcher(model):
    """How an unlearning job starts: one process, or one per GPU with the model sharded across them
    (FSDP; ``pipeline_steps/training/distributed.py``)."""
    processes = model_settings(model).get("unlearn_gpus", 1)
    if processes == 1:
        return "python -m"
    fsdp = REPO / "profiles" / "accelerate" / "fsdp.yaml"
    return f"accelerate launch --config_file {shlex.quote(str(fsdp))} --num_processes {processes} -m"


rule unlearn:
    input:
        unpack(unlearn_inputs),
        vanilla=pattern("vanilla"),
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.unlearn"),
    output:
        weights=pattern("unlearned"),
        log=pattern("unlearn_log"),
        manifest=pattern("unlearn_manifest"),
    params:
        out=subpath(output.manifest, parent=True),
        flags=unlearn_flags,
        training=lambda wc: training_flags(wc.model),
        launch=lambda wc: unlearn_launcher(wc.model),
    threads: lambda wc: model_settings(wc.model)["threads"]
    resources:
        gpu=lambda wc: gpus(wc.model, model_settings(wc.model).get("unlearn_gpus", 1)),
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
