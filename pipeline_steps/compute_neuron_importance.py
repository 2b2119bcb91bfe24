"""Stage: the activation statistics of the vanilla model's MLP neurons on one split (MANU's input).

    python -m pipeline_steps.compute_neuron_importance --model results/.../vanilla \\
        --benchmark results/.../benchmark --forget-ratio 10 --split forget_vqa \\
        --out results/.../forget~10/neuron_importance/forget_vqa

Splits are the Fisher stage's (``{forget,retain,real}_{vqa,text}``). Writes
``<out>.safetensors`` behind ``<out>.safetensors.index.json``: per decoder layer, the float64 sums
over the split's attended tokens of |a|, 1[|a| > 0.1] (MANU's frequency cut), a and a^2 for
every neuron of the MLP (``saliency/neurons.py``), under
``<layer>.mlp.down_proj.input.<statistic>``; the metadata names the statistics and the cut and
holds the token and example counts, the split, and the model's fingerprint, which the unlearn
stage checks before it prunes with them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .cli import run_stage, stage_parser
from .models.encoding import PromptEncoder
from .models.loading import DTYPES, load_model, model_fingerprint, resolve_device
from .saliency.neurons import ACTIVE_THRESHOLD, STATISTICS, activation_statistics, layer_count
from .saliency.tensor_files import write_tensors
from .training.examples import FISHER_SPLITS, fisher_split_source, split_examples

log = logging.getLogger("compute_neuron_importance")


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the (local) vanilla model directory")
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--forget-ratio", type=int, required=True)
    parser.add_argument("--split", choices=FISHER_SPLITS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output stem (without .safetensors)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    return parser


def main(args) -> None:
    canonical, modality = fisher_split_source(args.split, args.forget_ratio)
    examples = split_examples(args.benchmark, [canonical], [modality])
    loaded = load_model(str(args.model), dtype=args.dtype, device=str(resolve_device(args.device)))
    log.info("%s: %d examples, %d decoder layers", args.split, len(examples), layer_count(loaded.model, loaded.family))
    sums, tokens = activation_statistics(loaded.model, loaded.family, PromptEncoder(loaded.processor), examples,
                                         batch_size=args.batch_size, description=f"neurons {args.split}")
    metadata = {"kind": "mlp_activation_statistics", "split": args.split, "forget_ratio": str(args.forget_ratio),
                "statistics": ",".join(STATISTICS), "active_count": f"tokens with |a| > {ACTIVE_THRESHOLD}",
                "tokens": str(tokens), "examples": str(len(examples)),
                "token_selection": "every attended token (image, prompt and answer)",
                "accumulation_dtype": "float64", "model_dtype": args.dtype,
                "model_type": loaded.model.config.model_type, "model_fingerprint": model_fingerprint(args.model),
                "benchmark": str(args.benchmark)}
    write_tensors(args.out, {name: (torch.float64, tuple(t.shape)) for name, t in sums.items()}, sums.__getitem__,
                  metadata)


if __name__ == "__main__":
    run_stage(main, build_parser())
