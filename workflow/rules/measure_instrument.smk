"""Stage 1b: the synthetic benchmark's instrument diagnostics (coupling of face and name, the
paraphrase gap, every column on the base and vanilla models), measured before any unlearning
result is read."""


rule measure_instrument:
    input:
        unpack(lambda wc: plan.instrument_metrics(wc.benchmark, wc.model)),
        raw=pattern("raw_benchmark"),
        benchmark=pattern("benchmark"),
        base=pattern("base"),
        vanilla=pattern("vanilla"),
        code=stage_sources("pipeline_steps.measure_instrument"),
    output:
        report=pattern("instrument"),
        readable=report(pattern("instrument").replace(".json", ".md"), caption="../report/instrument.rst",
                        category="{benchmark}", subcategory="{model}", labels={"table": "instrument diagnostics"}),
    params:
        out=subpath(output.report, parent=True),
        metrics=lambda wc: labelled_flags("--metrics", plan.instrument_metrics(wc.benchmark, wc.model).items()),
        device=device,
    threads: threads
    conda:
        "../../environment.yml"
    log:
        "logs/measure_instrument/{benchmark}/{model}.log",
    benchmark:
        "logs/timings/measure_instrument/{benchmark}/{model}.tsv"
    shell:
        "python -m pipeline_steps.measure_instrument --raw {input.raw} --benchmark {input.benchmark}"
        " --model base={input.base} --model vanilla={input.vanilla} {params.metrics}"
        " --device {params.device} --threads {threads} --out {params.out} > {log} 2>&1"
