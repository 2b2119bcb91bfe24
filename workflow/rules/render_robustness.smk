"""Stage 10b: the robustness table and figure: every Table 1 row (vanilla, the oracle, each method at its
protocol point, or at its equal-forgetting point when every attack entry covers the frontier) after each attack entry of the config, next to the oracle's, and the
membership-inference AUCs with the gap to the oracle's (``pipeline_steps/render_robustness.py``)."""


rule render_robustness:
    input:
        attacks=lambda wc: reports.robustness_inputs(wc.ratio),
        code=stage_sources("pipeline_steps.render_robustness"),
    output:
        csv=f"{pattern('robustness')}.csv",
        md=report(f"{pattern('robustness')}.md", caption="../report/robustness.rst", category="Tables",
                  labels={"table": "robustness", "forget ratio": "{ratio}%"}),
        tex=f"{pattern('robustness')}.tex",
        png=report(f"{pattern('robustness_figure')}.png", caption="../report/robustness.rst", category="Figures",
                   labels={"figure": "robustness", "forget ratio": "{ratio}%"}),
        pdf=f"{pattern('robustness_figure')}.pdf",
    params:
        cells=lambda wc: labelled_flags("--cell", reports.robustness_cells(wc.ratio).items()),
        title=lambda wc: f"Robustness: forget accuracy after each attack and membership inference, forget ratio {wc.ratio}%.",
        stem=subpath(output.csv, strip_suffix=".csv"),
        tolerance=config["comparison"]["forget_tolerance"],
        figure=subpath(output.png, strip_suffix=".png"),
    conda:
        "../../environment.yml"
    log:
        "logs/render_robustness/forget~{ratio}.log",
    benchmark:
        "logs/timings/render_robustness/forget~{ratio}.tsv"
    shell:
        "python -m pipeline_steps.render_robustness --title {params.title:q} {params.cells}"
        " --equal-forgetting {params.tolerance} --out {params.stem} --figure {params.figure} > {log} 2>&1"
