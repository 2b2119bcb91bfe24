"""Stage: the MMUnlearner saliency mask for one forget ratio, beta and module group.

    python -m pipeline_steps.build_mask --target fisher/forget_vqa \\
        --preserve fisher/forget_text fisher/retain_vqa fisher/retain_text --beta 1 --modules all \\
        --out results/.../masks/beta~1/modules~all

S_T is the Fisher of ``--target``; S_P the Fisher of the union of ``--preserve`` (paper Eq. 6 by
default), or of ``--preserve-vision`` for the vision encoder's tensors when given. Each is, tensor
by tensor, the mean over the examples of its splits that reach the tensor: text-only splits count
for the language model's tensors only, never for the vision tower's or the connector's, which
they never run through (``saliency/reach.py``; the authors' rule too). The mask is
m = 1[S_T >= beta * S_P] (see ``saliency/masks.py`` for zeros, ties and infinities); module
groups are the paper's Table 2: ``language`` (LM + connector), ``vision`` (vision encoder),
``all``. Writes ``mask.safetensors`` (bool, every trainable tensor, False outside the group) and
``mask_stats.json``. Inputs are checked before any work (same model, same tensors and shapes);
tensors are then read, compared and written in chunks of ``CHUNK`` elements, so memory stays
the same whatever the size of the model or of its largest tensor.

A control mask (``--control random`` or ``gradient_magnitude``, with ``--like`` the Fisher-ratio
mask it is matched to) selects as many entries of every tensor as that mask, by another rule
(``saliency/masks.py``); it reads ``--target`` only, and one whole tensor at a time (a top-k needs
all of it), so its memory is that of the largest tensor.

SalUn's mask (``--salun FRACTION``, with ``--target`` the forget split's summed gradient,
``compute_fisher --estimator gradient``) keeps the ``FRACTION`` entries of largest |gradient| of the
whole model (``saliency/masks.py`` for the count and ties), read in chunks: two passes find the
threshold, a third writes the mask.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from .cli import StageError, run_stage, stage_parser
from .models.families import MODULE_GROUPS, PARTS, family_of
from .saliency import reach
from .saliency.masks import CONTROLS, MaskStats, control_mask, salun_selection, select
from .saliency.tensor_files import TensorFile, index_path, write_tensors
from .storage import write_json

log = logging.getLogger("build_mask")
CHUNK = 1 << 22  # elements compared at a time


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, required=True, help="Fisher file (stem or index) of the targeted set")
    parser.add_argument("--preserve", type=Path, nargs="+", help="Fisher files of the preserved set (not for a control)")
    parser.add_argument("--preserve-vision", type=Path, nargs="+", default=None,
                        help="preserved set for the vision encoder's tensors (default: --preserve)")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--modules", choices=MODULE_GROUPS, default="all")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--control", choices=CONTROLS, help="build a control mask matched to --like instead")
    parser.add_argument("--like", type=Path, help="the Fisher-ratio mask directory whose per-tensor sparsity a control keeps")
    parser.add_argument("--seed", type=int, default=0, help="of the random control")
    parser.add_argument("--salun", type=float, metavar="FRACTION",
                        help="build SalUn's mask instead, from --target a gradient file, keeping this fraction "
                             "of the entries")
    parser.add_argument("--max-shard-gb", type=float, default=4.0)
    return parser


def open_fisher(path: Path, kind: str = "fisher_diagonal_sum") -> TensorFile:
    """A file of the Fisher stage: a Fisher diagonal's sum, or (``gradient_sum``) a summed gradient."""
    what = "Fisher" if kind == "fisher_diagonal_sum" else "gradient"
    try:
        fisher = TensorFile(path)
    except FileNotFoundError:
        raise StageError(f"no {what} file at {path} (expected {index_path(path)})") from None
    if fisher.metadata.get("kind") != kind:
        raise StageError(f"{fisher.index_path} is not a {what} file written by compute_fisher")
    return fisher


def counts_by_part(fisher: TensorFile) -> dict[str, int]:
    """How many of a Fisher file's examples reach each part of the model (``saliency/reach.py``)."""
    try:
        return reach.read_counts(fisher.metadata, str(fisher.index_path))
    except ValueError as error:
        raise StageError(str(error)) from None


def check_compatible(target: TensorFile, others: list[TensorFile]) -> None:
    """Same model, estimator, tensors and shapes everywhere; names the first difference."""
    for other in others:
        for key in ("model_fingerprint", "model_type", "estimator"):
            if other.metadata.get(key) != target.metadata.get(key):
                raise StageError(f"{other.index_path} has {key} '{other.metadata.get(key)}' but {target.index_path} "
                                 f"has '{target.metadata.get(key)}': Fisher files of different models or estimators")
        names, expected = set(other.names()), set(target.names())
        if names != expected:
            missing = sorted(expected - names) or sorted(names - expected)
            where = other.index_path if expected - names else target.index_path
            raise StageError(f"tensor '{missing[0]}' is missing from {where}")
        for name in target.names():
            if other.spec(name)[1] != target.spec(name)[1]:
                raise StageError(f"tensor '{name}' has shape {list(other.spec(name)[1])} in {other.index_path} "
                                 f"but {list(target.spec(name)[1])} in {target.index_path}")


def read_without_nan(fisher: TensorFile, name: str, start: int, count: int) -> torch.Tensor:
    """A chunk of a Fisher tensor, refused if it holds NaN (infinities are kept: the mask rule has
    a documented outcome for them, NaN has none)."""
    chunk = fisher.read_flat(name, start, count)
    if torch.isnan(chunk).any():
        raise StageError(f"tensor '{name}' of {fisher.index_path} contains NaN")
    return chunk


def build_control(args, target: TensorFile) -> None:
    """A control mask: the per-tensor counts of ``--like``, the entries by ``--control``'s rule."""
    try:
        like = TensorFile(args.like / "mask")
    except FileNotFoundError:
        raise StageError(f"no mask at {args.like} (expected {args.like / 'mask.safetensors.index.json'})") from None
    if like.metadata.get("model_fingerprint") != target.metadata.get("model_fingerprint"):
        raise StageError(f"{like.index_path} and {target.index_path} are of different models")
    if set(like.names()) != set(target.names()):
        raise StageError(f"{like.index_path} and {target.index_path} hold different tensors")
    family = family_of(target.metadata["model_type"])
    stats = MaskStats()

    def mask_of(name: str):
        selected = int(like.get(name).sum())
        chunk = control_mask(args.control, name, selected, read_without_nan(target, name, 0, math.prod(target.spec(name)[1])),
                             args.seed)
        stats.add(name, family.module_of(name), selected, chunk.numel())
        return chunk.reshape(target.spec(name)[1])

    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {**like.metadata, "control": args.control, "like": str(like.index_path), "seed": str(args.seed),
                "target": str(target.index_path)}
    specs = {name: (torch.bool, target.spec(name)[1]) for name in like.names()}
    write_tensors(args.out / "mask", specs, mask_of, metadata, max_shard_bytes=int(args.max_shard_gb * 2**30))
    write_json(args.out / "mask_stats.json", {**{k: metadata[k] for k in ("beta", "modules", "control", "model_fingerprint")},
                                              **stats.summary()})


def build_salun(args) -> None:
    """SalUn's mask: the ``--salun`` fraction of the model's entries of largest |summed gradient|."""
    target = open_fisher(args.target, "gradient_sum")
    family = family_of(target.metadata["model_type"])
    sizes = {name: math.prod(target.spec(name)[1]) for name in target.names()}

    def chunks_of(name: str):
        for start in range(0, sizes[name], CHUNK):
            yield read_without_nan(target, name, start, min(CHUNK, sizes[name] - start))

    def every_chunk():
        return (chunk for name in sizes for chunk in chunks_of(name))

    try:
        selection = salun_selection(every_chunk, sum(sizes.values()), args.salun)
    except ValueError as error:
        raise StageError(str(error)) from None
    stats = MaskStats()

    def mask_of(name: str):
        selected = 0
        for chunk in chunks_of(name):
            chosen = selection(chunk)
            selected += int(chosen.sum())
            yield chosen
        stats.add(name, family.module_of(name), selected, sizes[name])

    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {"kind": "saliency_mask", "mask": "salun", "fraction": repr(args.salun),
                "threshold": repr(float(selection.gamma)), "modules": "all", "target": str(target.index_path),
                "model_type": target.metadata["model_type"], "model_fingerprint": target.metadata["model_fingerprint"],
                "estimator": target.metadata["estimator"]}
    specs = {name: (torch.bool, target.spec(name)[1]) for name in sizes}
    write_tensors(args.out / "mask", specs, mask_of, metadata, max_shard_bytes=int(args.max_shard_gb * 2**30))
    summary = stats.summary()
    write_json(args.out / "mask_stats.json", {**{k: metadata[k] for k in ("mask", "fraction", "threshold", "modules",
                                                                         "model_fingerprint")}, **summary})
    log.info("SalUn: kept %d of %d entries, |gradient| >= %s", summary["overall"]["selected"],
             summary["overall"]["total"], metadata["threshold"])


def main(args) -> None:
    if args.salun is not None:
        build_salun(args)
        return
    target = open_fisher(args.target)
    if args.control:
        if args.like is None:
            raise StageError("--control needs --like, the Fisher-ratio mask whose sparsity it keeps")
        build_control(args, target)
        return
    if not args.preserve:
        raise StageError("--preserve is required (the Fisher files of the preserved set)")
    preserve = [open_fisher(p) for p in args.preserve]
    preserve_vision = [open_fisher(p) for p in args.preserve_vision] if args.preserve_vision else preserve
    check_compatible(target, preserve + preserve_vision)
    counts = {f.index_path: counts_by_part(f) for f in [target, *preserve, *preserve_vision]}
    family = family_of(target.metadata["model_type"])
    # Per part, the preserve splits whose examples reach it: the others' sums there are zero and
    # their examples are not in its mean.
    sources_of = {part: [f for f in (preserve_vision if part == "vision" else preserve) if counts[f.index_path][part]]
                  for part in PARTS}
    preserve_counts = {part: sum(counts[f.index_path][part] for f in sources) for part, sources in sources_of.items()}
    for part in sorted({family.module_of(n) for n in target.names() if family.in_group(n, args.modules)}):
        if not preserve_counts[part]:
            log.warning("no preserve split reaches the %s (all text-only?): each of its entries with a positive "
                        "target saliency is selected", part)
    stats = MaskStats()

    def mask_of(name: str):
        """The mask of one tensor, chunk by chunk (a generator: ``write_tensors`` consumes it)."""
        part = family.module_of(name)
        total = math.prod(target.spec(name)[1])
        target_count, sources, preserve_count = counts[target.index_path][part], sources_of[part], preserve_counts[part]
        selected = 0
        for start in range(0, total, CHUNK):
            count = min(CHUNK, total - start)
            if family.in_group(name, args.modules):
                preserve_sum = torch.zeros(count, dtype=torch.float64)
                for source in sources:
                    preserve_sum += read_without_nan(source, name, start, count)
                chunk = select(read_without_nan(target, name, start, count), target_count, preserve_sum,
                               preserve_count, args.beta)
            else:
                chunk = torch.zeros(count, dtype=torch.bool)
            selected += int(chunk.sum())
            yield chunk
        stats.add(name, part, selected, total)

    args.out.mkdir(parents=True, exist_ok=True)
    specs = {name: (torch.bool, target.spec(name)[1]) for name in target.names()}
    metadata = {"kind": "saliency_mask", "beta": repr(args.beta), "modules": args.modules,
                "target": str(target.index_path), "preserve": " ".join(str(f.index_path) for f in preserve),
                "preserve_vision": " ".join(str(f.index_path) for f in preserve_vision),
                "target_count_by_part": reach.encode(counts[target.index_path]),
                "preserve_count_by_part": reach.encode(preserve_counts),
                "model_type": target.metadata["model_type"], "model_fingerprint": target.metadata["model_fingerprint"],
                "estimator": target.metadata["estimator"]}
    write_tensors(args.out / "mask", specs, mask_of, metadata, max_shard_bytes=int(args.max_shard_gb * 2**30))
    summary = stats.summary()
    write_json(args.out / "mask_stats.json", {**{k: metadata[k] for k in ("beta", "modules", "model_fingerprint")},
                                              **summary})
    log.info("selected %.4f of %d entries", summary["overall"]["fraction"], summary["overall"]["total"])


if __name__ == "__main__":
    run_stage(main, build_parser())
