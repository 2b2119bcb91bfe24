"""Stage 11: the paper's figures from results on disk: layer heatmaps (Figs. 5/6) and the
forgetting/utility trade-off (Fig. 4)."""


rule render_heatmaps:
    input:
        changes=lambda wc: [f"results/{wc.benchmark}/{wc.model}/forget~{wc.ratio}/changes/{v}.json"
                            for v in ("mask", *compared_variants(wc.benchmark, wc.model))],
        code=stage_sources("pipeline_steps.render_heatmaps"),
    output:
        png=report("results/figures/{benchmark}/{model}/layer_heatmap_forget~{ratio}.png",
                   caption="../report/layer_heatmap.rst", category="{benchmark}", subcategory="{model}",
                   labels={"figure": "layer heatmap", "forget ratio": "{ratio}%"}),
        pdf="results/figures/{benchmark}/{model}/layer_heatmap_forget~{ratio}.pdf",
    params:
        panels=lambda wc, input: labelled_flags(
            "--panel", zip(("mask", *compared_variants(wc.benchmark, wc.model)), input.changes)
        ),
        title=lambda wc: "Where the top-n changes land: {} on {}, forget ratio {}% (mask: beta {}, modules {})".format(
            wc.model, wc.benchmark, wc.ratio, *reference_mask()
        ),
        stem=subpath(output.png, strip_suffix=".png"),
    conda:
        "../../environment.yml"
    log:
        "logs/render_heatmaps/{benchmark}/{model}/forget~{ratio}.log",
    benchmark:
        "logs/timings/render_heatmaps/{benchmark}/{model}/forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.render_heatmaps --title {params.title:q} {params.panels} --out {params.stem}"
        " > {log} 2>&1"


rule render_tradeoffs:
    input:
        metrics=lambda wc: [eval_path(wc.benchmark, wc.model, ratio, v)
                            for ratio in experiment(wc.benchmark, wc.model)["forget_ratios"]
                            for v in ("vanilla", *compared_variants(wc.benchmark, wc.model))],
        code=stage_sources("pipeline_steps.render_tradeoffs"),
    output:
        png=report("results/figures/{benchmark}/{model}/tradeoff.png", caption="../report/tradeoff.rst",
                   category="{benchmark}", subcategory="{model}", labels={"figure": "trade-off", "forget ratio": "all"}),
        pdf="results/figures/{benchmark}/{model}/tradeoff.pdf",
    params:
        points=lambda wc: labelled_flags(
            "--point",
            [(f"{ratio}|{v}", eval_path(wc.benchmark, wc.model, ratio, v))
             for ratio in experiment(wc.benchmark, wc.model)["forget_ratios"]
             for v in ("vanilla", *compared_variants(wc.benchmark, wc.model))],
        ),
        title=lambda wc: f"Forgetting against utility: {wc.model} on {wc.benchmark}",
        stem=subpath(output.png, strip_suffix=".png"),
    conda:
        "../../environment.yml"
    log:
        "logs/render_tradeoffs/{benchmark}/{model}.log",
    benchmark:
        "logs/timings/render_tradeoffs/{benchmark}/{model}.tsv"
    shell:
        "python -m pipeline_steps.render_tradeoffs --title {params.title:q} {params.points} --out {params.stem}"
        " > {log} 2>&1"
