"""Where each artifact of the study lives: one path pattern per kind, in Snakemake's wildcard
syntax, so rules use a pattern as their output and input functions fill the same pattern in.
``results/README.md`` describes each file; ``python -m pipeline_steps.inspect`` summarises it."""

from __future__ import annotations

RUN = "results/{benchmark}/{model}/forget~{ratio}"  # one benchmark, model and forget ratio
PATTERNS = {
    "raw_benchmark": "results/{benchmark}/raw",
    "benchmark": "results/{benchmark}/benchmark",
    "environment_check": "results/{benchmark}/{model}/check_environment.json",
    "base": "results/{benchmark}/{model}/base",
    "vanilla": "results/{benchmark}/{model}/vanilla",
    "instrument": "results/{benchmark}/{model}/instrument/instrument.json",
    "reference": f"{RUN}/reference",
    "fisher": f"{RUN}/fisher/{{split}}.safetensors.index.json",
    "gradient": f"{RUN}/gradient/{{split}}.safetensors.index.json",  # SalUn's: the summed forget gradient
    # MANU's: the MLP neurons' activation statistics on a Fisher split (saliency/neurons.py).
    "neuron_importance": f"{RUN}/neuron_importance/{{split}}.safetensors.index.json",
    "mask": f"{RUN}/masks/beta~{{beta}}/modules~{{modules}}/mask.safetensors.index.json",
    "mask_stats": f"{RUN}/masks/beta~{{beta}}/modules~{{modules}}/mask_stats.json",
    "control_mask": f"{RUN}/masks/beta~{{beta}}/modules~{{modules}}/control~{{control}}/mask.safetensors.index.json",
    "control_mask_stats": f"{RUN}/masks/beta~{{beta}}/modules~{{modules}}/control~{{control}}/mask_stats.json",
    "salun_mask": f"{RUN}/masks/salun/fraction~{{fraction}}/mask.safetensors.index.json",
    "salun_mask_stats": f"{RUN}/masks/salun/fraction~{{fraction}}/mask_stats.json",
    "unlearned": f"{RUN}/unlearn/{{variant}}/weights.safetensors.index.json",
    "unlearn_log": f"{RUN}/unlearn/{{variant}}/train_log.jsonl",
    "unlearn_manifest": f"{RUN}/unlearn/{{variant}}/manifest.json",
    "metrics": f"{RUN}/eval/{{variant}}/metrics.json",
    "predictions": f"{RUN}/eval/{{variant}}/predictions.jsonl",
    "changes": f"{RUN}/changes/{{variant}}.json",
    # An attack entry (attacks/) on one variant, and the evaluation of the model it produced, if any.
    "attack": f"{RUN}/attacks/{{attack}}/{{variant}}/attack.json",
    "attack_metrics": f"{RUN}/attacks/{{attack}}/eval/{{variant}}/metrics.json",
    "attack_predictions": f"{RUN}/attacks/{{attack}}/eval/{{variant}}/predictions.jsonl",
    "table1": "results/tables/table1_forget~{ratio}",
    "equal_forgetting": "results/tables/equal_forgetting_forget~{ratio}",
    "robustness": "results/tables/robustness_forget~{ratio}",
    "sweep_table": "results/tables/{benchmark}/{model}/{sweep}_sweep_forget~{ratio}",
    "case_studies": "results/tables/{benchmark}/{model}/case_studies_forget~{ratio}.md",
    "layer_heatmap": "results/figures/{benchmark}/{model}/layer_heatmap_forget~{ratio}",
    "tradeoff": "results/figures/{benchmark}/{model}/tradeoff",
    "robustness_figure": "results/figures/robustness_forget~{ratio}",
}


def pattern(kind: str) -> str:
    if kind not in PATTERNS:
        raise KeyError(f"no artifact kind '{kind}' (known: {', '.join(PATTERNS)})")
    return PATTERNS[kind]


def path(kind: str, wildcards=None, **values) -> str:
    """The pattern of ``kind`` filled in from Snakemake wildcards and/or keyword values."""
    filled = dict(wildcards.items()) if wildcards is not None else {}
    return pattern(kind).format(**(filled | {k: str(v) for k, v in values.items()}))
