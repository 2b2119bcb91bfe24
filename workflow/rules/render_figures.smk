"""Stage 11: the figures from results on disk: layer heatmaps (Figs. 5/6) and the trade-off
frontiers (every sweep point of every method, forgetting against each utility column; Fig. 4)."""


rule render_heatmaps:
    input:
        changes=lambda wc: [artifact("changes", wc, variant=v) for v in reports.heatmap_panels(wc.benchmark, wc.model)],
        code=stage_sources("pipeline_steps.render_heatmaps"),
    output:
        png=report(f"{pattern('layer_heatmap')}.png", caption="../report/layer_heatmap.rst", category="{benchmark}",
                   subcategory="{model}", labels={"figure": "layer heatmap", "forget ratio": "{ratio}%"}),
        pdf=f"{pattern('layer_heatmap')}.pdf",
    params:
        panels=lambda wc, input: labelled_flags(
            "--panel", zip(reports.heatmap_panels(wc.benchmark, wc.model), input.changes)
        ),
        title=lambda wc: "Where the top-n changes land: {} on {}, forget ratio {}% (mask: beta {}, modules {})".format(
            wc.model, wc.benchmark, wc.ratio, *reports.reported_mask().values()
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
        evaluations=lambda wc: evaluation_files(list(reports.tradeoff_points(wc.benchmark, wc.model).values())),
        code=stage_sources("pipeline_steps.render_tradeoffs"),
    output:
        png=report(f"{pattern('tradeoff')}.png", caption="../report/tradeoff.rst", category="{benchmark}",
                   subcategory="{model}", labels={"figure": "trade-off", "forget ratio": "all"}),
        pdf=f"{pattern('tradeoff')}.pdf",
    params:
        points=lambda wc: labelled_flags("--point", reports.tradeoff_points(wc.benchmark, wc.model).items()),
        title=lambda wc: f"Trade-off frontiers: {wc.model} on {wc.benchmark}",
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
