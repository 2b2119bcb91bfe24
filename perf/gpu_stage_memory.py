"""Peak GPU memory and time of each GPU stage on a mid-size model of a real family, against the
environment check's estimate for the same model.

    python perf/gpu_stage_memory.py --family llava --text-layers 4 --vision-layers 4 --out llava.json
    python perf/gpu_stage_memory.py --family qwen2_vl --text-layers 4 --vision-layers 4 --out qwen.json

The model has the real checkpoint's widths, heads, MLP sizes and vocabulary size (LLaVA-1.5-7B:
Llama 4096 wide with a 1024-wide CLIP ViT-L/14 at 336 px; Qwen2-VL-7B: 3584 wide with grouped
keys and values and a 1280-wide vision tower) but only a few layers and random weights, so
nothing is downloaded. Each stage runs in this process through its own ``main`` (the code the
workflow runs, in bfloat16 on ``cuda`` with gradient checkpointing, the real configs' batch
sizes) on a small synthetic MLLMU-Bench; between stages the peak counters are reset. Printed per
stage: peak allocated and reserved memory, wall time (loading included), and the estimate
``models.memory.memory_estimates`` gives for this model at the measured tokens per example
(what ``config/README.md`` quotes for the 7B models). Without a GPU it still runs every stage on
the CPU and reports times only; a smoke run there needs small sizes, e.g. ``--text-layers 1
--vision-layers 1 --text-hidden 128 --vision-hidden 64 --vocab-size 4000``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline_steps import (build_mask, compute_fisher, evaluate, finetune, prepare_benchmark,  # noqa: E402
                            synthesize_benchmark, unlearn)
from pipeline_steps.benchmarks.records import read_split  # noqa: E402
from pipeline_steps.build_base import tokenizer_corpus  # noqa: E402
from pipeline_steps.models.encoding import Example, PromptEncoder  # noqa: E402
from pipeline_steps.models.loading import save_model  # noqa: E402
from pipeline_steps.models.memory import GIB, RunPlan, memory_estimates, model_shape  # noqa: E402
from pipeline_steps.models.tiny import TinyArchitecture, build_tiny  # noqa: E402

# The real checkpoints' sizes (their config.json), less the depth.
REAL = {
    "llava": {"arch": dict(image_size=336, patch_size=14, vision_hidden=1024, vision_heads=16, text_hidden=4096,
                           text_heads=32),
              "text": dict(intermediate_size=11008, num_key_value_heads=32, vocab_size=32064)},
    "qwen2_vl": {"arch": dict(image_size=448, patch_size=14, vision_hidden=1280, vision_heads=16, text_hidden=3584,
                              text_heads=28),
                 "text": dict(intermediate_size=18944, num_key_value_heads=4, vocab_size=152064)},
}
BATCHES = {"finetune": 4, "fisher": 2, "unlearn": 4, "evaluate": 16}  # the real configs'
LORA_R = 16


def build_model(family: str, corpus: list[str], args) -> tuple[torch.nn.Module, object]:
    """A random model with the real widths and vocabulary and ``args``' depths (and, for a CPU
    smoke run, widths: four heads each, the real MLP-to-width ratio)."""
    sizes = {**REAL[family]["arch"], "text_layers": args.text_layers, "vision_layers": args.vision_layers,
             "vocab_size": 2000}
    text = dict(REAL[family]["text"])
    if args.text_hidden:
        text["intermediate_size"] = text["intermediate_size"] * args.text_hidden // sizes["text_hidden"]
        text["num_key_value_heads"] = min(text["num_key_value_heads"], 4)
        sizes |= {"text_hidden": args.text_hidden, "text_heads": 4}
    if args.vision_hidden:
        sizes |= {"vision_hidden": args.vision_hidden, "vision_heads": 4}
    if args.vocab_size:
        text["vocab_size"] = args.vocab_size
    model, processor = build_tiny(family, corpus, TinyArchitecture(**sizes), seed=0)
    for key, value in text.items():
        setattr(model.config.text_config, key, value)
    return type(model)(model.config), processor


def tokens_per_example(model_dir: Path, benchmark: Path) -> tuple[int, int | None]:
    """Tokens of one VQA example, and the patches its image puts through the vision tower where the
    processor decides them (Qwen2-VL: ``image_grid_thw``; None: the model's fixed image size)."""
    from PIL import Image

    from pipeline_steps.models.loading import load_model

    loaded = load_model(str(model_dir))
    record = next(r for r in read_split(benchmark, "forget_5") if r.image)
    pair = next(p for p in record.train if p.modality == "vqa")
    encoded = PromptEncoder(loaded.processor).encode(
        Example(pair.question, pair.answer, Image.open(benchmark / record.image).convert("RGB")))
    grid = encoded.get("image_grid_thw")
    return int(encoded["input_ids"].shape[-1]), (int(grid.prod()) if grid is not None else None)


def measure(name: str, module, argv: list[str], on_gpu: bool) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)  # each stage makes its own accelerator
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    module.main(module.build_parser().parse_args([str(a) for a in argv]))
    if on_gpu:
        torch.cuda.synchronize()
    result = {"stage": name, "seconds": round(time.perf_counter() - start, 1)}
    if on_gpu:
        result |= {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
                   "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(REAL), required=True)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-hidden", type=int, help="override the real width (CPU smoke runs)")
    parser.add_argument("--vision-hidden", type=int, help="override the real width (CPU smoke runs)")
    parser.add_argument("--vocab-size", type=int, help="override the real vocabulary size (CPU smoke runs)")
    parser.add_argument("--profiles", type=int, default=20, help="fictitious profiles of the synthetic benchmark")
    parser.add_argument("--out", type=Path, help="write the measurements here as JSON")
    parser.add_argument("--workdir", type=Path, help="keep the model, data and outputs here")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-stage-memory-"))
    raw, benchmark, model_dir = work / "raw", work / "benchmark", work / "model"

    synthesize_benchmark.main(synthesize_benchmark.build_parser().parse_args(
        ["--out", str(raw), "--fictitious-profiles", str(args.profiles), "--real-profiles", "4", "--image-size",
         "64", "--test-images", "1"]))
    prepare_benchmark.main(prepare_benchmark.build_parser().parse_args(
        ["--format", "mllmu_bench", "--path", str(raw), "--out", str(benchmark)]))
    corpus = tokenizer_corpus(read_split(benchmark, "full") + read_split(benchmark, "real_world"))
    model, processor = build_model(args.family, corpus, args)
    save_model(model.to(torch.bfloat16), processor, model_dir)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    tokens, patches = tokens_per_example(model_dir, benchmark)
    print(f"{args.family}: {parameters / 1e9:.2f} B parameters, {tokens} tokens per VQA example, on {device}")

    common = ["--benchmark", benchmark, "--device", device, "--dtype", "bfloat16"]
    fisher = {split: work / "fisher" / split for split in ("forget_vqa", "retain_vqa")}
    runs = [
        ("finetune (LoRA)", finetune, ["--base", model_dir, "--split", "full", "--out", work / "vanilla",
                                       "--epochs", "1", "--batch-size", BATCHES["finetune"], "--lora-r", LORA_R,
                                       "--modalities", "vqa", "--gradient-checkpointing", "--progress-dir", "none",
                                       *common]),
        *[(f"compute_fisher ({split})", compute_fisher,
           ["--model", model_dir, "--forget-ratio", "5", "--split", split, "--out", stem, "--batch-size",
            BATCHES["fisher"], "--progress-dir", "none", *common]) for split, stem in fisher.items()],
        ("build_mask (CPU)", build_mask, ["--target", fisher["forget_vqa"], "--preserve", fisher["retain_vqa"],
                                          "--out", work / "mask"]),
        *[(f"unlearn ({method})", unlearn,
           ["--vanilla", model_dir, "--forget-ratio", "5", "--method", method, "--out", work / "unlearn" / method,
            "--epochs", "1", "--batch-size", BATCHES["unlearn"], "--gradient-checkpointing", "--progress-dir", "none",
            *(["--mask", work / "mask"] if method == "mmunlearner" else []), *common])
          for method in ("kl_min", "mmunlearner")],
        ("evaluate", evaluate, ["--model", model_dir, "--forget-ratio", "5", "--out", work / "eval",
                                "--batch-size", BATCHES["evaluate"], "--max-new-tokens", "16", *common]),
    ]
    results = [measure(name, module, argv, on_gpu) for name, module, argv in runs]

    shape = model_shape(str(model_dir))
    if patches is not None:  # the measured images' patches, not the estimate's assumed 1024 x 1024
        shape = replace(shape, vision_patches=patches)
    plan = RunPlan(LORA_R, BATCHES["finetune"], BATCHES["fisher"], BATCHES["unlearn"], BATCHES["evaluate"],
                   ("kl_min",), tokens=tokens, gradient_checkpointing=True)
    estimates = memory_estimates(shape, "bfloat16", plan)
    estimates["unlearn (mmunlearner)"] = memory_estimates(shape, "bfloat16", replace(plan, methods=("mmunlearner",)))[
        "unlearn"]
    for result in results:
        stage = result["stage"].split(" ")[0]
        key = result["stage"] if result["stage"] in estimates else stage
        if key in estimates and stage != "build_mask":
            result["estimate_gib"] = round(estimates[key]["bytes"] / GIB, 2)
    print("\n| stage | peak allocated GiB | peak reserved GiB | estimate GiB | measured / estimate | seconds |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ratio = (f"{r['peak_allocated_gib'] / r['estimate_gib']:.2f}"
                 if "peak_allocated_gib" in r and "estimate_gib" in r else "")
        print(f"| {r['stage']} | {r.get('peak_allocated_gib', 'n/a')} | {r.get('peak_reserved_gib', 'n/a')} | "
              f"{r.get('estimate_gib', '')} | {ratio} | {r['seconds']} |")
    if args.out:
        args.out.write_text(json.dumps({"family": args.family, "parameters": parameters, "tokens": tokens,
                                        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
                                        "text_layers": args.text_layers, "vision_layers": args.vision_layers,
                                        "stages": results}, indent=2))


if __name__ == "__main__":
    main()
