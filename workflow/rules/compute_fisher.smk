"""Stage 5: Fisher diagonals of the vanilla model, one job per forget ratio and split; and the
summed forget gradient SalUn's mask is built from."""


rule compute_fisher:
    input:
        model=pattern("vanilla"),
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.compute_fisher"),
    output:
        pattern("fisher"),
    params:
        stem=subpath(output[0], strip_suffix=".safetensors.index.json"),
        estimator=config["saliency"]["estimator"],
        batch_size=config["saliency"]["batch_size"],
        max_shard_gb=config["saliency"]["max_shard_gb"],
        device=device,
        dtype=dtype,
    threads: threads
    resources:
        gpu=gpu,
    conda:
        "../../environment.yml"
    log:
        "logs/compute_fisher/{benchmark}/{model}/forget~{ratio}/{split}.log",
    benchmark:
        "logs/timings/compute_fisher/{benchmark}/{model}/forget~{ratio}/{split}.tsv"
    shell:
        "python -m pipeline_steps.compute_fisher --model {input.model} --benchmark {input.benchmark}"
        " --forget-ratio {wildcards.ratio} --split {wildcards.split} --out {params.stem}"
        " --estimator {params.estimator} --batch-size {params.batch_size} --max-shard-gb {params.max_shard_gb}"
        " --device {params.device} --dtype {params.dtype} --threads {threads} > {log} 2>&1"


# SalUn's saliency: the same stage's signed gradient of the split's summed loss (estimator
# "gradient"), of the targeted split only, for the methods whose mask is SalUn's.
use rule compute_fisher as compute_gradient with:
    output:
        pattern("gradient"),
    params:
        estimator="gradient",
    log:
        "logs/compute_gradient/{benchmark}/{model}/forget~{ratio}/{split}.log",
    benchmark:
        "logs/timings/compute_gradient/{benchmark}/{model}/forget~{ratio}/{split}.tsv"
