"""Host memory of sharded unlearning, per process, in copies of the model, measured in one run.

    python perf/host_memory.py [--code CHECKOUT] [--processes 2] [--method mmunlearner]

Runs ``pipeline_steps.unlearn`` of a small LLaVA (random weights, stored in bfloat16, about 40M
parameters: large enough that the model, not the interpreter, sets the numbers) the way a
sharded job runs (``accelerate launch --config_file profiles/accelerate/fsdp.yaml``, FSDP2 over
CPU processes talking gloo), and prints for every process its host memory above what it held
before loading the model, divided by the model's size in its storage dtype:

* ``load``: the peak while loading the model and the mask, before training;
* ``training``: the peak while training (``unlearning.loop.unlearn``);
* ``end of training``: what the process holds when training returns;
* ``writing``: the peak from then until the process ends (gathering and writing the changes).

On CPU the model itself (its float32 trained shard, gradients and AdamW moments: about 4 copies
of the bfloat16 model per process at 2 processes) lives in host memory too; on a GPU it does
not, so what a GPU run keeps on the host is the difference between two checkouts plus what the
code keeps there on purpose (``docs/performance.md``). With ``--code`` the same run is made with
an older checkout's ``pipeline_steps`` (e.g. ``git worktree add /tmp/before <commit>``), on the
same inputs, and its outputs are compared byte for byte with this checkout's (``cmp``).

Peaks are the kernel's high-water mark of resident memory (``VmHWM``), reset at each phase
(``/proc/self/clear_refs``); ``MALLOC_MMAP_THRESHOLD_`` is fixed at 64 KiB so that every freed
tensor goes back to the kernel and resident memory follows what is alive. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("weights.safetensors", "train_log.jsonl", "manifest.json")
PHASES = ("load", "training", "end of training", "writing")


# -- inside each launched process ------------------------------------------------------------------

def kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def worker(record: Path, code: Path, stage_args: list[str]) -> None:
    """Run the unlearn stage of ``code`` in this process, recording its host memory by phase."""
    sys.path.insert(0, str(code))
    import torch  # noqa: F401  (imported before the baseline is taken)

    from pipeline_steps import unlearn as stage
    from pipeline_steps.cli import run_stage

    assert Path(stage.__file__).resolve().is_relative_to(code.resolve()), stage.__file__
    marks: dict = {}
    load_model, train = stage.load_model, stage.unlearn

    def measured_load(*args, **kwargs):
        if "baseline" not in marks:
            marks["baseline"] = kib("VmRSS")
            reset_peak()
        loaded = load_model(*args, **kwargs)
        marks.setdefault("model_bytes", sum(p.numel() * p.element_size() for p in loaded.model.parameters()))
        return loaded

    def measured_unlearn(*args, **kwargs):
        marks["load"] = kib("VmHWM")
        reset_peak()
        history = train(*args, **kwargs)
        marks["training"] = kib("VmHWM")
        marks["end of training"] = kib("VmRSS")
        reset_peak()
        return history

    stage.load_model, stage.unlearn = measured_load, measured_unlearn
    try:
        run_stage(stage.main, stage.build_parser(), stage_args)
    finally:
        marks["writing"] = kib("VmHWM")
        marks["rank"] = int(os.environ.get("RANK", 0))
        record.with_name(f"{record.name}.{marks['rank']}.json").write_text(json.dumps(marks))


# -- the driver ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def inputs(work: Path) -> tuple[Path, Path, Path]:
    """A small synthetic benchmark, a LLaVA of about 40M parameters saved in bfloat16, and a random
    mask of half its entries."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from pipeline_steps import prepare_benchmark, synthesize_benchmark
    from pipeline_steps.benchmarks.records import read_split
    from pipeline_steps.build_base import tokenizer_corpus
    from pipeline_steps.models.loading import model_fingerprint, save_model
    from pipeline_steps.models.tiny import TinyArchitecture, build_tiny
    from pipeline_steps.saliency.tensor_files import write_tensors

    synthesize_benchmark.main(synthesize_benchmark.build_parser().parse_args(
        ["--out", str(work / "raw"), "--seed", "3", "--fictitious-profiles", "40", "--real-profiles", "4",
         "--holdout-profiles", "4", "--image-size", "32", "--test-images", "1"]))
    benchmark = work / "benchmark"
    prepare_benchmark.main(prepare_benchmark.build_parser().parse_args(
        ["--format", "mllmu_bench", "--path", str(work / "raw"), "--out", str(benchmark)]))
    corpus = tokenizer_corpus(read_split(benchmark, "full") + read_split(benchmark, "real_world"))
    arch = TinyArchitecture(vision_hidden=256, vision_layers=2, text_hidden=1024, text_layers=2, text_heads=8)
    model, processor = build_tiny("llava", corpus, arch, seed=0)
    vanilla = work / "vanilla"
    save_model(model.to(torch.bfloat16), processor, vanilla)
    generator = torch.Generator().manual_seed(0)
    mask = {name: torch.rand(p.shape, generator=generator) < 0.5 for name, p in model.named_parameters()}
    (work / "mask").mkdir()
    write_tensors(work / "mask" / "mask", {n: (t.dtype, tuple(t.shape)) for n, t in mask.items()}, mask.__getitem__,
                  {"kind": "saliency_mask", "modules": "all", "model_fingerprint": model_fingerprint(vanilla)})
    return benchmark, vanilla, work / "mask"


def measure(code: Path, processes: int, stage_args: list[str], record: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(code), "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "TQDM_DISABLE": "1"}
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", str(processes),
               "--main_process_port", str(free_port()), "--config_file",
               str(code / "profiles" / "accelerate" / "fsdp.yaml"), str(Path(__file__).resolve()),
               "--worker", str(record), "--code", str(code), "--", *stage_args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=code, env=env)
    if result.returncode != 0:
        sys.exit(f"the run of {code} failed:\n{result.stderr[-4000:]}")
    return sorted((json.loads(path.read_text()) for path in record.parent.glob(f"{record.name}.*.json")),
                  key=lambda marks: marks["rank"])


def report(label: str, marks: list[dict]) -> None:
    model = marks[0]["model_bytes"]
    print(f"\n{label}: model {model / 2**20:.1f} MiB (bfloat16), {len(marks)} processes; host memory above "
          "each process's before loading, in model copies:")
    print("| process | " + " | ".join(PHASES) + " | before loading MiB |")
    print("|---|" + "---|" * (len(PHASES) + 1))
    for m in marks:
        ratios = [(m[phase] - m["baseline"]) * 1024 / model for phase in PHASES]
        print(f"| {m['rank']}{' (main)' if m['rank'] == 0 else ''} | " + " | ".join(f"{r:.2f}" for r in ratios)
              + f" | {m['baseline'] / 1024:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="an older checkout, measured the same way for comparison")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--method", default="mmunlearner")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the inputs and outputs here (default: a temporary folder)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        return worker(args.worker, args.code, rest[1:] if rest[:1] == ["--"] else rest)
    work = args.keep or Path(tempfile.mkdtemp(prefix="host-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    benchmark, vanilla, mask = inputs(work)
    stage_args = ["--vanilla", str(vanilla), "--benchmark", str(benchmark), "--forget-ratio", "10",
                  "--method", args.method, "--mask", str(mask), "--epochs", str(args.epochs), "--batch-size", "4",
                  "--learning-rate", "1e-3", "--dtype", "bfloat16", "--device", "cpu", "--progress-dir", "none"]
    if args.method not in ("mmunlearner", "salun"):
        stage_args = stage_args[:8] + stage_args[10:]
    runs = {"this checkout": REPO, **({"--code": args.code.resolve()} if args.code else {})}
    outs = {}
    for label, code in runs.items():
        outs[label] = work / f"out-{len(outs)}"
        marks = measure(code, args.processes, [*stage_args, "--out", str(outs[label])], work / f"memory-{len(outs)}")
        report(f"{label} ({code})", marks)
    if args.code:
        print()
        for name in OUTPUTS:
            same = subprocess.run(["cmp", *(str(out / name) for out in outs.values())]).returncode == 0
            print(f"cmp {name}: {'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
