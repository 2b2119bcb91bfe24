"""Stage 5b: MANU's input, the vanilla model's MLP neuron activation statistics, one job per
forget ratio and split (multimodal and text-only, forget and retain), for the methods that prune
neurons."""


rule compute_neuron_importance:
    input:
        model=pattern("vanilla"),
        benchmark=pattern("benchmark"),
        code=stage_sources("pipeline_steps.compute_neuron_importance"),
    output:
        pattern("neuron_importance"),
    params:
        stem=subpath(output[0], strip_suffix=".safetensors.index.json"),
        batch_size=config["saliency"]["batch_size"],
        device=device,
        dtype=dtype,
    threads: threads
    resources:
        gpu=gpu,
    conda:
        "../../environment.yml"
    log:
        "logs/compute_neuron_importance/{benchmark}/{model}/forget~{ratio}/{split}.log",
    benchmark:
        "logs/timings/compute_neuron_importance/{benchmark}/{model}/forget~{ratio}/{split}.tsv"
    shell:
        "python -m pipeline_steps.compute_neuron_importance --model {input.model} --benchmark {input.benchmark}"
        " --forget-ratio {wildcards.ratio} --split {wildcards.split} --out {params.stem}"
        " --batch-size {params.batch_size} --device {params.device} --dtype {params.dtype}"
        " --threads {threads} > {log} 2>&1"
