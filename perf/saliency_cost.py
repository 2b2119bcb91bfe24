"""What the saliency stages cost, measured in one run on this machine.

    python perf/saliency_cost.py [--examples 256] [--mask-parameters 1.0e9] [--scratch DIR]

1. Fisher: the per-sample estimator's time over a bare forward+backward loop on the same batches
   (the floor: any gradient-based saliency needs at least that), next to the batch estimator and
   the naive alternative, one backward pass per example.
2. Mask: the build_mask stage's peak resident memory against the size of its inputs, on Fisher
   files of about --mask-parameters parameters generated for the purpose (one target and three
   preserved splits, fp32: 16 GB on disk for 1e9 parameters; they are deleted afterwards), next
   to the peak of a process that only imports the stage (torch's own footprint).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from pipeline_steps.benchmarks.synthetic.portraits import draw_portrait  # noqa: E402
from pipeline_steps.benchmarks.synthetic.world import ATTRIBUTES, sample_world  # noqa: E402
from pipeline_steps.models.encoding import Example, PromptEncoder  # noqa: E402
from pipeline_steps.models.tiny import TinyArchitecture, build_tiny  # noqa: E402
from pipeline_steps.saliency import reach  # noqa: E402
from pipeline_steps.saliency.fisher import estimate_fisher  # noqa: E402
from pipeline_steps.saliency.tensor_files import write_tensors  # noqa: E402
from pipeline_steps.training.losses import answer_logits, answer_nll  # noqa: E402


def examples_of(count: int) -> tuple[list[Example], list[Example]]:
    people = sample_world(seed=0, n_fictitious=count // len(ATTRIBUTES) + 1, n_real=0)
    vqa, text = [], []
    for person in people:
        image = draw_portrait(person.traits, 64)
        for attribute in ATTRIBUTES:
            vqa.append(Example(attribute.vqa_question, person.facts[attribute.key], image))
            text.append(Example(attribute.text_question.format(name=person.name), person.facts[attribute.key]))
    return vqa[:count], text[:count]


# Runs a module as __main__ and prints the process's peak resident memory. Read from /proc inside
# the child: a forked child's ru_maxrss starts at its parent's size, VmHWM is reset by exec.
PEAK_OF = """
import runpy, sys
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if module != "-":
        runpy.run_module(module, run_name="__main__")
finally:
    peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
    print("PEAK_KB", peak)
"""


def peak_memory(module: str, *args) -> int:
    """Peak resident bytes of ``python -m module args`` (module "-" only imports what is preloaded)."""
    result = subprocess.run([sys.executable, "-c", PEAK_OF, module, *map(str, args)], capture_output=True, text=True,
                            check=True)
    return int(result.stdout.split("PEAK_KB")[-1].split()[0]) * 1024


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bare_loop(model, encoder, examples, batch_size):
    for start in range(0, len(examples), batch_size):
        batch = encoder.collate([encoder.encode(e) for e in examples[start:start + batch_size]])
        answer_nll(*answer_logits(model, batch)).sum().backward()
        model.zero_grad(set_to_none=True)


def fisher_costs(args) -> None:
    vqa, text = examples_of(args.examples)
    corpus = [e.question + " " + e.answer for e in vqa + text]
    model, processor = build_tiny("llava", corpus, TinyArchitecture(), seed=0)
    encoder = PromptEncoder(processor)
    model.eval()
    print(f"Fisher on a tiny LLaVA ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{args.examples} examples per split, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'split':6} {'bare fwd+bwd':>13} {'per_sample':>11} {'batch':>8} {'1 bwd/example':>14}")
    for name, examples in (("vqa", vqa), ("text", text)):
        bare_loop(model, encoder, examples[: args.batch_size], args.batch_size)  # warm-up
        bare = timed(lambda: bare_loop(model, encoder, examples, args.batch_size))
        per_sample = timed(lambda: estimate_fisher(model, encoder, examples, batch_size=args.batch_size))
        batch = timed(lambda: estimate_fisher(model, encoder, examples, batch_size=args.batch_size, estimator="batch"))
        subset = examples[: max(args.batch_size * 4, 32)]
        naive = timed(lambda: estimate_fisher(model, encoder, subset, batch_size=1, estimator="batch"))
        naive *= len(examples) / len(subset)
        print(f"{name:6} {bare:12.2f}s {per_sample / bare:10.2f}x {batch / bare:7.2f}x {naive / bare:13.2f}x")
    print("(ratios are times over the bare loop; '1 bwd/example' extrapolates a subset run with batch size 1)")


def mask_memory(args) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="mask-cost-", dir=args.scratch))
    hidden, inner = 4096, 11008  # a 7B layer's shapes
    layer = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
             "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
             "mlp.gate_proj": (inner, hidden), "mlp.up_proj": (inner, hidden), "mlp.down_proj": (hidden, inner)}
    per_layer = sum(a * b for a, b in layer.values())
    layers = max(1, round(args.mask_parameters / per_layer))
    specs = {f"model.language_model.layers.{i}.{module}.weight": (torch.float32, shape)
             for i in range(layers) for module, shape in layer.items()}
    total = sum(a * b for _, (a, b) in specs.values())
    generator = torch.Generator().manual_seed(0)
    try:
        files = []
        for split in ("forget_vqa", "forget_text", "retain_vqa", "retain_text"):
            metadata = {"kind": "fisher_diagonal_sum", "sample_count": "100", "model_fingerprint": "synthetic",
                        reach.COUNTS: reach.encode(reach.counts_by_part(100, images=split.endswith("_vqa"))),
                        "model_type": "llava", "estimator": "per_sample"}
            write_tensors(scratch / split, specs, lambda n: torch.rand(specs[n][1], generator=generator), metadata)
            files.append(scratch / split)
        inputs = sum(f.stat().st_size for f in scratch.glob("*.safetensors"))
        baseline = peak_memory("pipeline_steps.build_mask", "--help")  # the interpreter with torch loaded
        start = time.perf_counter()
        peak = peak_memory("pipeline_steps.build_mask", "--target", files[0], "--preserve", *files[1:],
                           "--out", scratch / "mask")
        elapsed = time.perf_counter() - start
        largest = max(a * b for _, (a, b) in specs.values()) * 4
        print(f"\nMask over {total / 1e9:.2f}e9 parameters ({layers} layers of a 7B model's shapes): "
              f"inputs {inputs / 2**30:.1f} GiB in 4 Fisher files, {elapsed:.0f}s")
        print(f"peak resident memory {peak / 2**30:.2f} GiB = {peak / inputs:.3f} x the inputs; "
              f"{baseline / 2**30:.2f} GiB of it is the interpreter with torch loaded, so the stage's own "
              f"working memory is {(peak - baseline) / 2**30:.2f} GiB "
              f"({(peak - baseline) / largest:.1f} x the largest fp32 tensor, {largest / 2**20:.0f} MiB)")
    finally:
        shutil.rmtree(scratch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mask-parameters", type=float, default=1.0e9)
    parser.add_argument("--scratch", default=None, help="directory for the generated Fisher files")
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    fisher_costs(args)
    mask_memory(args)


if __name__ == "__main__":
    main()
