"""What the training stages' loop costs over a bare forward+backward loop, measured in one run.

    python perf/training_cost.py [--examples 256] [--repeats 3] [--threads N]

Every training stage (``build_base``'s pretraining, ``finetune``, ``unlearn``) runs the one loop
of ``training/loop.py``: encode each example once, when first read, then per step collate a batch, the objective's
loss terms, backward, clipping, AdamW, logging and resumable progress. The floor is what any
trainer has to do with the same batches: pre-encoded, collated, one forward and one backward pass
of the trained model over each batch the loss reads (the forget batch, and the retain batch for a
method that uses one), one AdamW step. What a method adds on purpose (a frozen model's forward for
NPO and KL_Min, the mask applied to the forget gradient, the changed-entries count at each epoch
end) counts as the stage's cost, so its ratio says what that costs.

The model is the embedded config's tiny LLaVA (random weights; speed does not depend on them), the
examples a small synthetic MLLMU-Bench's: fine-tuning as ``config/config.yaml`` runs it (every
parameter, batch 32, image and text pairs), unlearning as the embedded default (batch 4, the forget
split's image pairs, the retain split's for the methods that use it), one epoch each. Times are the
best of ``--repeats``, each from a fresh copy of the model, taken in turn. A last line times the
fine-tuning floor again on the same examples grouped by length, with each one's padding: what
grouping would save.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")

from pipeline_steps import prepare_benchmark, synthesize_benchmark  # noqa: E402
from pipeline_steps.benchmarks.records import forget_split, read_split, retain_split  # noqa: E402
from pipeline_steps.build_base import tokenizer_corpus  # noqa: E402
from pipeline_steps.models.encoding import PromptEncoder  # noqa: E402
from pipeline_steps.models.tiny import TinyArchitecture, build_tiny  # noqa: E402
from pipeline_steps.training.examples import split_examples  # noqa: E402
from pipeline_steps.training.loop import batches, fit  # noqa: E402
from pipeline_steps.training.losses import answer_logits, answer_nll  # noqa: E402
from pipeline_steps.training.precision import training_accelerator  # noqa: E402
from pipeline_steps.training.settings import TrainSettings  # noqa: E402
from pipeline_steps.unlearning.loop import unlearn  # noqa: E402
from pipeline_steps.unlearning.methods import get_method  # noqa: E402
from pipeline_steps.unlearning.settings import UnlearnSettings, parse_hyperparameters  # noqa: E402

UNLEARNING = ("ga", "ga_diff", "kl_min", "npo", "mmunlearner")  # Table 1's methods
FORGET_RATIO = 10


def best_time(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def bare_loop(model, encoder: PromptEncoder, batch_lists: list[list[list]], learning_rate: float) -> None:
    """One forward and backward pass per batch of each step (``batch_lists[step]``: the step's
    batches of encoded examples), then one AdamW step."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    for step in batch_lists:
        for batch in step:
            answer_nll(*answer_logits(model, encoder.collate(batch))).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def step_batches(encoded: list, batch_size: int, seed: int) -> list[list]:
    """The loop's shuffled batches of ``encoded`` (``training/loop.py``'s ``batches``)."""
    return batches(encoded, batch_size, random.Random(seed))


def length_grouped(encoded: list, batch_size: int, seed: int) -> list[list]:
    """The same examples in batches of similar length (sorted, chunked, the chunks shuffled): what
    grouping by length (Hugging Face's ``group_by_length``) would save the floor. Not what any
    stage does: it makes batches of one modality, which changes what fine-tuning learns."""
    ordered = sorted(encoded, key=lambda e: len(e["input_ids"]))
    chunks = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    random.Random(seed).shuffle(chunks)
    return chunks


def padded_per_real_token(batch_list: list[list]) -> float:
    real = sum(len(e["input_ids"]) for batch in batch_list for e in batch)
    return sum(len(batch) * max(len(e["input_ids"]) for e in batch) for batch in batch_list) / real


def random_mask(model, share: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: (torch.rand(p.shape, generator=generator) < share).to(p.dtype)
            for name, p in model.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256, help="fine-tuning pairs (image and text)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    work = Path(tempfile.mkdtemp(prefix="training-cost-"))
    synthesize_benchmark.main(synthesize_benchmark.build_parser().parse_args(
        ["--out", str(work / "raw"), "--fictitious-profiles", "40", "--real-profiles", "4", "--test-images", "1"]))
    benchmark = work / "benchmark"
    prepare_benchmark.main(prepare_benchmark.build_parser().parse_args(
        ["--format", "mllmu_bench", "--path", str(work / "raw"), "--out", str(benchmark)]))
    corpus = tokenizer_corpus(read_split(benchmark, "full") + read_split(benchmark, "real_world"))
    vanilla, processor = build_tiny("llava", corpus, TinyArchitecture(), seed=0)  # config/config.yaml's tiny_llava
    encoder, accelerator = PromptEncoder(processor), training_accelerator("cpu", "float32")
    finetune = split_examples(benchmark, ["full"], ["vqa", "text"])[: args.examples]
    forget = split_examples(benchmark, [forget_split(FORGET_RATIO)], ["vqa"])
    retain = split_examples(benchmark, [retain_split(FORGET_RATIO)], ["vqa"])
    encoded = {name: [encoder.encode(e) for e in examples]
               for name, examples in (("finetune", finetune), ("forget", forget), ("retain", retain))}

    rows = []
    settings = TrainSettings(epochs=1, batch_size=32, learning_rate=1e-3)
    shuffled = step_batches(encoded["finetune"], settings.batch_size, 0)
    grouped = length_grouped(encoded["finetune"], settings.batch_size, 0)
    rows.append(("finetune", "(all stages that fit)", len(finetune), settings.batch_size, 0,
                 best_time(lambda: fit(copy.deepcopy(vanilla), encoder, finetune, settings, accelerator), args.repeats),
                 best_time(lambda: bare_loop(copy.deepcopy(vanilla), encoder, [[b] for b in shuffled], 1e-3),
                           args.repeats)))
    grouped_floor = best_time(lambda: bare_loop(copy.deepcopy(vanilla), encoder, [[b] for b in grouped], 1e-3),
                              args.repeats)

    mask = random_mask(vanilla, 0.5, seed=1)
    names = {name for name, _ in vanilla.named_parameters()}
    for name in UNLEARNING:
        method = get_method(name)
        hparams = parse_hyperparameters(method, [])
        settings = UnlearnSettings(epochs=1, batch_size=4, learning_rate=3e-4)
        reference = copy.deepcopy(vanilla).eval().requires_grad_(False) if method.frozen_model else None

        def stage():
            model = copy.deepcopy(vanilla)
            unlearn(model, method, encoder, forget, retain if method.uses_retain else [], settings, hparams,
                    accelerator, trainable=names,  # Table 1's methods train every parameter (module group all)
                    mask=mask if method.needs_mask else None, reference_model=reference)

        forget_batches = step_batches(encoded["forget"], settings.batch_size, 0)
        retain_batches = step_batches(encoded["retain"], settings.batch_size, 1)
        steps = [[b, retain_batches[i % len(retain_batches)]] if method.uses_retain else [b]
                 for i, b in enumerate(forget_batches)]
        rows.append(("unlearn", name, len(forget), settings.batch_size, int(method.frozen_model is not None),
                     best_time(stage, args.repeats),
                     best_time(lambda: bare_loop(copy.deepcopy(vanilla), encoder, steps, 3e-4), args.repeats)))

    print(f"tiny LLaVA ({sum(p.numel() for p in vanilla.parameters()) / 1e6:.1f} M parameters), one epoch, "
          f"on cpu, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| stage | method | examples | batch | frozen-model forwards per step | floor s | stage / floor |")
    print("|---|---|---|---|---|---|---|")
    for stage, method, examples, batch, frozen, took, floor in rows:
        print(f"| {stage} | {method} | {examples} | {batch} | {frozen} | {floor:.2f} | {took / floor:.2f}x |", flush=True)
    print("(floor: pre-encoded batches, one forward and backward pass of the trained model per batch the loss "
          "reads, one AdamW step; the stage also encodes, clips, logs and does what its method adds)")
    shuffled_floor = rows[0][-1]
    print(f"fine-tuning floor, the loop's shuffled batches: {shuffled_floor:.2f} s, "
          f"{padded_per_real_token(shuffled):.2f} padded tokens per real one; batches grouped by length: "
          f"{grouped_floor:.2f} s, {padded_per_real_token(grouped):.2f} "
          f"(shuffled / grouped: {shuffled_floor / grouped_floor:.2f}x)")


if __name__ == "__main__":
    main()
