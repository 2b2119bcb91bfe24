"""What the evaluate stage's scoring costs over its floor, measured in one run on this machine.

    python perf/evaluation_cost.py [--items 128] [--batch-size 64] [--repeats 3]
    python perf/evaluation_cost.py --family llava --text-layers 4 --vision-layers 4      # GPU
    python perf/evaluation_cost.py --family qwen2_vl --text-layers 1 --vision-layers 1 \\
        --text-hidden 128 --vision-hidden 64 --vocab-size 4000                          # CPU smoke

The items are the multiple-choice questions of a small synthetic MLLMU-Bench (``--items`` asked
about a portrait, as many asked in text). Per family and scoring mode it prints the stage's time
(``option_loglikelihoods`` or ``generate_answers`` as ``evaluate`` calls them, prompt encoding
included) over the floor: one batched forward pass over the distinct tokens of the same items,
pre-encoded and sorted by length. For likelihood those are each item's image and prompt once,
then all its options' answer tokens; for generation, the prompt and the tokens the model
generated (decoding them one step at a time costs more by nature). The straightforward
per-option computation (``evaluation/reference.py``, what the stage did before) is shown on the
same scale. Times are the best of ``--repeats``, taken in turn.

Without ``--text-layers`` the models are the embedded config's tiny LLaVA and Qwen2-VL (random
weights; speed does not depend on them). With it, ``--family`` is built at the real checkpoint's
widths and vocabulary and the given depths by ``perf/gpu_stage_memory.py``'s builder, on the GPU
in bfloat16 when there is one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "perf")]
os.environ.setdefault("TQDM_DISABLE", "1")

from pipeline_steps import prepare_benchmark, synthesize_benchmark  # noqa: E402
from pipeline_steps.benchmarks.layouts import layout_of  # noqa: E402
from pipeline_steps.benchmarks.records import read_manifest, read_split  # noqa: E402
from pipeline_steps.build_base import tokenizer_corpus  # noqa: E402
from pipeline_steps.evaluate import asked_items  # noqa: E402
from pipeline_steps.evaluation.batching import by_length, to_device, with_tokens  # noqa: E402
from pipeline_steps.evaluation.scoring import generate_answers, option_loglikelihoods  # noqa: E402
from pipeline_steps.evaluation.reference import per_option_loglikelihoods  # noqa: E402
from pipeline_steps.models.encoding import Example, PromptEncoder, multiple_choice_question  # noqa: E402
from pipeline_steps.models.tiny import TinyArchitecture, build_tiny  # noqa: E402


def best_times(functions: dict, repeats: int, device: str) -> tuple[dict, dict]:
    """The fastest of ``repeats`` calls of each function, called in turn (so that a shared
    machine's changing load falls on all of them alike), and each one's last result."""
    best, results = {name: float("inf") for name in functions}, {}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            results[name] = function()
            if device == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


@torch.no_grad()
def floor_pass(model, encoder: PromptEncoder, sequences: list[tuple[dict, int]], batch_size: int, device) -> None:
    """One forward pass over ``sequences`` (encoded, number of scored tokens at the end), sorted by
    length, the output head run only where tokens are scored."""
    for batch in by_length([s["input_ids"].shape[0] for s, _ in sequences], budget=batch_size):
        inputs = to_device(encoder.collate([sequences[i][0] for i in batch]), device)
        logits = model(**inputs, use_cache=False, logits_to_keep=max(sequences[i][1] for i in batch)).logits
        torch.log_softmax(logits.float(), dim=-1)


def measure(family: str, model, processor, asked: list, args, device: str) -> list[tuple]:
    model.eval()
    encoder, size = PromptEncoder(processor), args.batch_size
    choice = []
    for a in asked:
        answers = torch.cat([encoder.continuation_ids(text) for text in a.item.options.values()])
        choice.append((with_tokens(encoder.encode(Example(a.item.question, None, a.image)), answers), len(answers)))
    prompts = [Example(multiple_choice_question(a.item.question, a.item.options), None, a.image) for a in asked]
    answers = generate_answers(model, encoder, prompts, size, args.max_new_tokens)
    generated = []
    for prompt, answer in zip(prompts, answers):
        ids = torch.tensor(encoder.tokenizer(answer, add_special_tokens=False)["input_ids"]
                           + [encoder.tokenizer.eos_token_id])
        generated.append((with_tokens(encoder.encode(prompt), ids), len(ids)))
    times, _ = best_times({
        "likelihood": lambda: option_loglikelihoods(model, encoder, asked, size),
        "likelihood floor": lambda: floor_pass(model, encoder, choice, size, device),
        "per-option": lambda: per_option_loglikelihoods(model, encoder, asked, size),
        "generate": lambda: generate_answers(model, encoder, prompts, size, args.max_new_tokens),
        "generate floor": lambda: floor_pass(model, encoder, generated, size, device),
    }, args.repeats, device)
    tokens = {mode: sum(s["input_ids"].shape[0] for s, _ in sequences)
              for mode, sequences in (("likelihood", choice), ("generate", generated))}
    return [(family, mode, len(asked), tokens[mode], times[f"{mode} floor"], times[mode] / times[f"{mode} floor"],
             times["per-option"] / times["likelihood floor"] if mode == "likelihood" else None)
            for mode in ("likelihood", "generate")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128, help="multiple-choice items per modality")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--family", choices=("llava", "qwen2_vl"), help="with --text-layers: one real-width model")
    parser.add_argument("--text-layers", type=int, help="build --family at the real widths with this many layers")
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-hidden", type=int, help="override the real width (CPU smoke runs)")
    parser.add_argument("--vision-hidden", type=int, help="override the real width (CPU smoke runs)")
    parser.add_argument("--vocab-size", type=int, help="override the real vocabulary size (CPU smoke runs)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.text_layers and not args.family:
        parser.error("--text-layers builds one real-width model: give its --family")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)

    work = Path(tempfile.mkdtemp(prefix="evaluation-cost-"))
    synthesize_benchmark.main(synthesize_benchmark.build_parser().parse_args(
        ["--out", str(work / "raw"), "--fictitious-profiles", "40", "--real-profiles", "4", "--image-size", "64",
         "--test-images", "1"]))
    benchmark = work / "benchmark"
    prepare_benchmark.main(prepare_benchmark.build_parser().parse_args(
        ["--format", "mllmu_bench", "--path", str(work / "raw"), "--out", str(benchmark)]))
    columns = layout_of(read_manifest(benchmark)).records(benchmark, 5)
    asked = (asked_items(*columns["retain_vqa"], "multiple_choice", benchmark)[: args.items]
             + asked_items(*columns["retain_qa"], "multiple_choice", benchmark)[: args.items])
    corpus = tokenizer_corpus(read_split(benchmark, "full") + read_split(benchmark, "real_world"))

    if args.text_layers:
        from gpu_stage_memory import build_model

        built = {args.family: build_model(args.family, corpus, args)}
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        built = {f: (m.to(device=device, dtype=dtype), p) for f, (m, p) in built.items()}
    else:
        arch = TinyArchitecture(vocab_size=2048)  # config/config.yaml's tiny_llava
        built = {family: build_tiny(family, corpus, arch, seed=0) for family in ("llava", "qwen2_vl")}
    print(f"{len(asked)} multiple-choice items ({args.items} per modality at most), batch {args.batch_size}, "
          f"on {device}, {torch.get_num_threads()} threads")
    print("| family | parameters | mode | items | tokens | floor s | stage / floor | per-option (before) / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for family, (model, processor) in built.items():
        parameters = sum(p.numel() for p in model.parameters())
        for row in measure(family, model, processor, asked, args, device):
            name, mode, items, tokens, floor, ratio, before = row
            shown_before = f"{before:.2f}x" if before is not None else ""
            print(f"| {name} | {parameters / 1e6:.1f} M | {mode} | {items} | {tokens} | {floor:.2f} | {ratio:.2f}x | "
                  f"{shown_before} |", flush=True)
    print("(floor: one batched forward pass over the items' distinct tokens; generate also decodes step by step)")


if __name__ == "__main__":
    main()
