"""Stage: unlearn the forget profiles' images from the vanilla model with one method.

    python -m pipeline_steps.unlearn --vanilla results/.../vanilla --benchmark results/.../benchmark \\
        --forget-ratio 5 --method mmunlearner --mask results/.../masks/beta~1.0/modules~all \\
        --out results/.../unlearn/mmunlearner/beta~1.0/modules~all

Only image-grounded (VQA) pairs are unlearned from and retained, as in the paper: forget VQA of
the forget profiles, retain VQA of the retain profiles. Methods are in
``unlearning/methods.py``, each with its own hyper-parameters (``--hparam NAME=VALUE``, listed
by ``--help``); a method with a frozen retain-set model (``npo``) needs ``--reference`` (the base
fine-tuned on the retain set), a masked one (``mmunlearner``, ``salun``) a ``--mask`` of its
kind (MMUnlearner's Fisher-ratio mask or a control of it, SalUn's at its ``mask_fraction``; the
mask's module group also fixes which tensors train; the other methods train every parameter, as
the paper's baselines, except where a method trains fewer: ``rmu``, a few MLPs). A method that
takes no gradient step (``manu``) edits the vanilla weights from the neuron statistics of
``--neuron-importance`` (``compute_neuron_importance`` outputs) instead. Writes
``weights.safetensors`` (only the tensors that changed, applied to the vanilla model by
``evaluate --changes``), ``train_log.jsonl`` (per step: losses, gradient norm, fraction of
parameters changed; for ``manu``, the pruned neurons of each layer) and ``manifest.json`` (the
exact settings). ``--lora-r`` trains LoRA adapters instead of the weights (the authors' baselines
on MLLMU-Bench), merged before anything is written, so the outputs are those of a full run and the
manifest's ``lora`` says rank, alpha, dropout and layers; a masked or pruning method refuses it.
A mask that does not fit the model is refused before training; a non-finite loss stops the job
and leaves nothing behind.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .benchmarks.records import forget_split, retain_split
from .cli import StageError, run_stage, stage_parser
from .models.encoding import PromptEncoder
from .models.loading import load_model, model_fingerprint
from .saliency.tensor_files import TensorFile
from .storage import atomic_directory, write_json, write_jsonl
from .training.adapters import ALL_LINEAR, linear_modules, lora_record
from .training.distributed import HostCopy, Processes
from .training.examples import split_examples
from .training.precision import TRAINING_DTYPES, enable_gradient_checkpointing, training_accelerator
from .training.progress import add_progress_arguments, examples_digest, job_progress
from .unlearning.calibration import Calibration
from .unlearning.loop import UnlearnSettings, check_all_per_epoch, unlearn
from .unlearning.methods import REGISTRY, get_method
from .unlearning.settings import RETAIN_SCHEDULES, describe_hyperparameters, parse_hyperparameters
from .unlearning.weights import save_changes, write_changes

log = logging.getLogger("unlearn")


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0], epilog=describe_hyperparameters())
    parser.add_argument("--vanilla", type=Path, required=True)
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--forget-ratio", type=int, required=True)
    parser.add_argument("--method", choices=sorted(REGISTRY), required=True)
    parser.add_argument("--mask", type=Path, help="mask directory (build_mask output), for masked methods")
    parser.add_argument("--reference", type=Path,
                        help="the base model fine-tuned on the retain set, for methods whose frozen model it is (npo)")
    parser.add_argument("--neuron-importance", type=Path,
                        help="directory of the neuron statistics (compute_neuron_importance), for methods that prune (manu)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--warmup-ratio", type=float, help="warm-up then cosine learning rate (default: constant)")
    parser.add_argument("--lora-r", type=int, default=0,
                        help="train LoRA adapters of this rank on the linear layers the method trains, merged into "
                             "the weights at the end; 0 (default) trains the weights themselves")
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                        help="one of the method's own hyper-parameters (see below); unset ones keep their defaults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--retain-schedule", choices=sorted(RETAIN_SCHEDULES), default="one_per_step",
                        help="for a method with a retain term: " + "; ".join(
                            f"{name}: {meaning}" for name, meaning in RETAIN_SCHEDULES.items()))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=TRAINING_DTYPES, default="float32",
                        help="the model's storage dtype; bfloat16 trains in float32 under bfloat16 autocast")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    calibration = parser.add_argument_group(
        "calibrated equal forgetting (unlearning/calibration.py)",
        "with --until-oracle, unlearn until Forget VQA on the selection half of the forget people is at most the "
        "oracle's plus --tolerance, checked before the first step and every --check-every steps (for a method that "
        "takes no step, along its own axis), and keep the weights there; --epochs is then the most it runs")
    calibration.add_argument("--until-oracle", type=Path, metavar="MODEL",
                             help="the oracle: the base model fine-tuned on the retain set only")
    calibration.add_argument("--tolerance", type=float, default=0.05)
    calibration.add_argument("--check-every", type=int, default=5, metavar="STEPS")
    calibration.add_argument("--scoring", choices=("likelihood", "generate"), default="likelihood",
                             help="how Forget VQA is scored (the evaluation's primary mode)")
    calibration.add_argument("--eval-batch-size", type=int, default=64)
    calibration.add_argument("--max-new-tokens", type=int, default=8)
    add_progress_arguments(parser)
    return parser


PROBE = "pipeline_steps.unlearning.forgetting_probe"


def calibration_for(args, encoder: PromptEncoder, device: str) -> tuple[Calibration | None, object]:
    """The run's calibration and the probe its checks use (``forgetting_probe.ForgettingProbe``),
    with the target measured on the oracle (``--until-oracle``); none without it."""
    if args.until_oracle is None:
        return None, None
    if args.check_every < 1 or args.tolerance < 0:
        raise StageError("--check-every must be at least 1 and --tolerance at least 0")
    # Loaded by name, as the attack stage loads its kinds: no import names the evaluation code, so
    # only a calibrated run's job depends on it (workflow/rules/unlearn.smk, its code input).
    ForgettingProbe = importlib.import_module(PROBE).ForgettingProbe
    try:
        probe = ForgettingProbe(args.benchmark, args.forget_ratio, encoder, args.scoring, args.eval_batch_size,
                                args.max_new_tokens)
    except ValueError as error:
        raise StageError(str(error)) from None
    target = probe(load_model(str(args.until_oracle), dtype=args.dtype, device=device).model)
    log.info("calibration target: the oracle's Forget VQA on the selection half, %.4f (%d items)", target,
             len(probe.items))
    return Calibration(target, args.tolerance, args.check_every), probe


def load_mask(mask_dir: Path, model, fingerprint: str, method, hparams) -> tuple[TensorFile, str]:
    """The mask, as a mapping {parameter name: bool tensor} read from disk when asked (a process of a
    sharded run reads only its rows of each tensor), and its module group; refused unless it fits
    the model and is the method's kind of mask (SalUn's at its ``mask_fraction``, or a Fisher-ratio one)."""
    try:
        stored = TensorFile(mask_dir / "mask")
    except FileNotFoundError:
        raise StageError(f"no mask at {mask_dir} (expected {mask_dir / 'mask.safetensors.index.json'})") from None
    if stored.metadata.get("model_fingerprint") != fingerprint:
        raise StageError(f"the mask {stored.index_path} was built from the model with fingerprint "
                         f"{stored.metadata.get('model_fingerprint')}, not this vanilla model ({fingerprint})")
    kind = stored.metadata.get("mask", "fisher_ratio")
    if kind != method.mask_kind:
        raise StageError(f"the mask {stored.index_path} is a {kind} mask; method '{method.name}' needs a "
                         f"{method.mask_kind} mask")
    if kind == "salun" and float(stored.metadata["fraction"]) != hparams.mask_fraction:
        raise StageError(f"the mask {stored.index_path} keeps a fraction {stored.metadata['fraction']} of the "
                         f"entries, not mask_fraction={hparams.mask_fraction}")
    parameters = dict(model.named_parameters())
    names = set(stored.names())
    for name in sorted(set(parameters) ^ names):
        where = "the mask" if name in parameters else "the model"
        raise StageError(f"tensor '{name}' is missing from {where}: the mask does not match the model")
    for name, parameter in parameters.items():
        if tuple(parameter.shape) != stored.spec(name)[1]:
            raise StageError(f"mask tensor '{name}' has shape {list(stored.spec(name)[1])}, the model's "
                             f"{list(parameter.shape)}")
    return stored, stored.metadata["modules"]


def lora_targets(model, trainable: set[str]) -> str | list[str]:
    """The layers a LoRA run adapted (those of the method's trainable set): ``all-linear`` when
    that is every linear layer but the output head, else their names."""
    targets = linear_modules(model, trainable)
    return ALL_LINEAR if targets == linear_modules(model) else targets


def write_outputs(out: Path, save_weights, manifest: dict, log_records: list[dict]) -> None:
    """The job's three files, appearing together: the changed tensors (``save_weights(stem, metadata)``
    writes them and returns their counts), the manifest (with the counts) and the log."""
    with atomic_directory(out) as scratch:
        counts = save_weights(scratch / "weights", {"kind": "unlearned_changes", "method": manifest["method"],
                                                    "vanilla_fingerprint": manifest["vanilla_fingerprint"]})
        write_json(scratch / "manifest.json", {**manifest, **counts})
        write_jsonl(scratch / "train_log.jsonl", log_records)


def load_statistics(directory: Path, splits, fingerprint: str) -> dict[str, tuple[dict, int]]:
    """``{split: (activation sums, token count)}`` of the neuron statistics a method reads,
    refused unless each was computed on this vanilla model."""
    statistics = {}
    for split in splits:
        try:
            stored = TensorFile(directory / split)
        except FileNotFoundError:
            raise StageError(f"no neuron statistics of split '{split}' at {directory} (expected "
                             f"{directory / split}.safetensors.index.json: run compute_neuron_importance)") from None
        if stored.metadata.get("model_fingerprint") != fingerprint:
            raise StageError(f"the neuron statistics {stored.index_path} were computed on the model with fingerprint "
                             f"{stored.metadata.get('model_fingerprint')}, not this vanilla model ({fingerprint})")
        statistics[split] = ({name: stored.get(name) for name in stored.names()}, int(stored.metadata["tokens"]))
    return statistics


def edit_without_training(args, method, hparams, fingerprint: str) -> None:
    """A method that takes no gradient step (``manu``): its edit of the vanilla weights, written
    as any method's changes, with its records as the log."""
    statistics = load_statistics(args.neuron_importance, method.activation_splits, fingerprint)
    loaded = load_model(str(args.vanilla), dtype=args.dtype, device="cpu")
    start_values = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    calibration, probe = calibration_for(args, PromptEncoder(loaded.processor), "cpu")
    if calibration is None:
        records = method.edit(loaded.model, loaded.family, hparams, statistics)
    else:  # the method's own axis, from its smallest value, until the calibration's rule stops it
        setting, values = method.calibration_axis
        for index, value in enumerate(values):
            with torch.no_grad():  # each value edits the vanilla weights afresh
                for name, parameter in loaded.model.named_parameters():
                    parameter.copy_(start_values[name])
            hparams = replace(hparams, **{setting: value})
            records = method.edit(loaded.model, loaded.family, hparams, statistics)
            if calibration.record(index, probe(loaded.model), **{setting: value}):
                break
        log.info("calibration: %s", calibration.summary())
    log.info("%s: %s", args.method, ", ".join(f"layer {r['layer']}: {r['pruned']} neurons" for r in records))
    manifest = {"method": args.method, "vanilla": str(args.vanilla), "vanilla_fingerprint": fingerprint,
                "benchmark": str(args.benchmark), "forget_ratio": args.forget_ratio,
                "neuron_importance": str(args.neuron_importance), "module_group": "language", "training": None,
                "hyperparameters": asdict(hparams), "dtype": args.dtype,
                "calibration": calibration and calibration.summary()}
    final = dict(loaded.model.named_parameters())
    write_outputs(args.out, lambda stem, metadata: save_changes(final, start_values, stem, metadata), manifest,
                  records)


def main(args) -> None:
    method = get_method(args.method)
    hparams = parse_hyperparameters(method, args.hparam)
    if args.lora_r and method.lora_refusal:
        raise StageError(f"method '{args.method}' cannot unlearn through LoRA (--lora-r {args.lora_r}): "
                         f"{method.lora_refusal}; run it without --lora-r")
    if args.retain_schedule != "one_per_step" and not method.uses_retain:
        raise StageError(f"method '{args.method}' has no retain term: --retain-schedule {args.retain_schedule} "
                         "does not apply to it")
    if method.activation_splits and args.neuron_importance is None:
        raise StageError(f"method '{args.method}' needs --neuron-importance (the compute_neuron_importance outputs)")
    if not method.trains:
        return edit_without_training(args, method, hparams, model_fingerprint(args.vanilla))
    if method.needs_mask and args.mask is None:
        raise StageError(f"method '{args.method}' needs --mask")
    if method.frozen_model == "retain_finetuned" and args.reference is None:
        raise StageError(f"method '{args.method}' needs --reference (the base model fine-tuned on the retain set)")
    forget = split_examples(args.benchmark, [forget_split(args.forget_ratio)], ["vqa"])
    retain = split_examples(args.benchmark, [retain_split(args.forget_ratio)], ["vqa"]) if method.uses_retain else []
    if args.retain_schedule == "all_per_epoch":  # refused before any model is loaded
        try:
            check_all_per_epoch(method, hparams, len(forget), len(retain), args.batch_size)
        except ValueError as error:
            raise StageError(str(error)) from None
    # Under `accelerate launch --num_processes N` each process gets its own device and a share of
    # every batch (training/distributed.py); the main process writes the outputs.
    accelerator = training_accelerator(args.device, args.dtype)
    processes = Processes(accelerator)
    if args.lora_r and processes.shards:
        raise StageError("LoRA unlearning (--lora-r) does not run sharded (an FSDP launch): launch it as one process "
                         "(a 7B model's adapters fit one GPU) or replicated (accelerate launch --multi_gpu)")
    device = accelerator.device
    fingerprint = model_fingerprint(args.vanilla)
    loaded = load_model(str(args.vanilla), dtype=args.dtype, device=str(device))
    model = loaded.model
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    mask, modules = load_mask(args.mask, model, fingerprint, method, hparams) if method.needs_mask else (None, "all")
    trainable = method.trainable(model, loaded.family, hparams, {
        name for name, _ in model.named_parameters() if loaded.family.in_group(name, modules)})
    reference = None
    if method.frozen_model:
        source = args.vanilla if method.frozen_model == "vanilla" else args.reference
        reference = load_model(str(source), dtype=args.dtype, device=str(device)).model.eval()
        for parameter in reference.parameters():
            parameter.requires_grad_(False)
    settings = UnlearnSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                               weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed,
                               log_every=args.log_every, warmup_ratio=args.warmup_ratio, lora_r=args.lora_r,
                               lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                               retain_schedule=args.retain_schedule)
    # On the host (a 7B copy would cost 14 GB of GPU): compared against at epoch ends and when saving.
    # Only this process's part of each tensor (its shard, in a sharded run), taken once sharded.
    start_values = HostCopy(model)
    log.info("%s: %d forget and %d retain examples, %d trainable tensors (module group %s)", args.method,
             len(forget), len(retain), len(trainable), modules)
    encoder = PromptEncoder(loaded.processor)
    calibration, probe = calibration_for(args, encoder, str(device))
    progress = job_progress(args, fingerprint, examples_digest(forget + retain),
                            *(model_fingerprint(m) if m else "" for m in (args.reference, args.until_oracle)))
    history = unlearn(model, method, encoder, forget, retain, settings, hparams, accelerator, trainable=trainable,
                      mask=mask, reference_model=reference, progress=progress, start_values=start_values,
                      calibration=calibration, probe=probe)
    # LoRA's adapters are merged into ``model`` by now: its weights are saved as a full run's are.
    lora = lora_record(settings.lora_r, settings.lora_alpha, settings.lora_dropout, lora_targets(model, trainable),
                       len(linear_modules(model, trainable))) if settings.lora_r else None
    # What changed, counted on each process's shard, then written one tensor at a time: in a sharded
    # run each changed tensor is gathered to the main process when it is written (every process
    # takes part), so no process ever holds the whole model on the host.
    named = dict(model.named_parameters())
    changed = start_values.changed(named, processes)
    specs = {name: (start_values.dtypes[name], tuple(parameter.shape)) for name, parameter in named.items()}

    def save_weights(stem, metadata):
        return write_changes(specs, changed, lambda name: start_values.whole_pair(name, named[name], processes),
                             stem, metadata)

    if not processes.is_main:
        save_weights(None, {})
        processes.close()
        return
    manifest = {"method": args.method, "vanilla": str(args.vanilla), "vanilla_fingerprint": fingerprint,
                "benchmark": str(args.benchmark), "forget_ratio": args.forget_ratio, "mask": str(args.mask or ""),
                "module_group": modules, "reference": str(args.reference or ""), "forget_examples": len(forget),
                "retain_examples": len(retain), "training": asdict(settings),
                "hyperparameters": asdict(hparams), "dtype": args.dtype,
                "lora": lora, "calibration": calibration and calibration.summary()}
    write_outputs(args.out, save_weights, manifest, history)
    progress.clear()
    processes.close()


if __name__ == "__main__":
    run_stage(main, build_parser())
