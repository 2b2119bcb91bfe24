"""Diagonal empirical Fisher of a model on a set of examples, accumulated in fp32.

The saliency of paper Eq. 4 is the squared gradient of the answer-token loss. Two estimators, and
a third that is not a Fisher:

* ``per_sample`` (default): F = sum_i (dL_i/dtheta)^2, the diagonal empirical Fisher, with L_i
  the mean answer-token NLL of example i (Eq. 13). Computed exactly without a backward pass per
  example: one backward of sum_i L_i, with hooks that rebuild each example's gradient from the
  activations and output gradients of every module that owns parameters. In a batch the examples
  do not interact, so the rows of a module's output gradient that belong to example i are exactly
  dL_i/d(output). A Linear layer's per-example gradient is then sum_t g_t x_t^T over the
  example's rows, its square summed over examples; embeddings, normalisation layers and patch
  convolutions have their own rules below. The count is the number of examples.
* ``batch``: F = sum_b (dL_b/dtheta)^2 with L_b the mean loss of mini-batch b (what the authors'
  code does; it depends on the batch size). The count is the number of batches.
* ``gradient``: not a Fisher diagonal but the signed gradient of the summed loss,
  G = d(sum_i L_i)/dtheta, SalUn's saliency before its magnitude is taken (``masks.salun_keep``);
  the same batches and losses, one plain backward each, no squaring. The count is the number of
  examples, so G / count is the mean gradient.

Every module owning a trainable parameter must have a per-sample rule; a model with another kind
of module is refused up front (use the ``batch`` estimator for it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..models.encoding import Example, PromptEncoder
from ..training.losses import answer_logits, answer_nll
from ..training.distributed import Processes
from ..training.progress import Progress

log = logging.getLogger(__name__)
ESTIMATORS = ("per_sample", "batch", "gradient")
LOSS_DEFINITION = "mean negative log-likelihood of the answer tokens of one example (paper Eq. 13)"


@dataclass
class FisherResult:
    sums: dict[str, torch.Tensor]  # parameter name -> sum of squared gradients (of gradients), fp32, on CPU
    count: int  # examples (per_sample, gradient) or batches (batch)
    estimator: str
    images: bool  # the examples' (all or none have one): which parts of the model they reach (``reach.py``)


def _rows_per_unit(rows: int, batch_size: int, image_rows: torch.Tensor | None) -> list[int]:
    """How the rows of a 2-D activation split among examples (Qwen2-VL's vision tower packs the
    patches of all images into one sequence, image after image)."""
    if image_rows is None:
        raise ValueError(f"a module saw {rows} packed rows in a batch without images")
    total = int(image_rows.sum())
    if total % rows == 0 and rows * (total // rows) == total and all(int(n) % (total // rows) == 0 for n in image_rows):
        factor = total // rows
        return [int(n) // factor for n in image_rows]
    raise ValueError(f"cannot split {rows} packed rows among images of {image_rows.tolist()} patches")


def _units(tensor: torch.Tensor, engine: "_PerSampleHooks") -> list[torch.Tensor]:
    """The per-example pieces of an activation (or of its gradient), each as [rows, features]."""
    if tensor.dim() >= 3:
        if tensor.shape[0] != engine.batch_size:
            raise ValueError(f"an activation of leading size {tensor.shape[0]} in a batch of {engine.batch_size}: "
                             "per-sample Fisher needs one image per example or none")
        return [unit.reshape(-1, unit.shape[-1]) for unit in tensor]
    sizes = _rows_per_unit(tensor.shape[0], engine.batch_size, engine.image_rows)
    if len(sizes) != engine.batch_size:
        raise ValueError("per-sample Fisher needs one image per example or none")
    return list(torch.split(tensor, sizes))


class _PerSampleHooks:
    """Forward hooks that capture inputs and register gradient hooks on outputs."""

    def __init__(self, model: nn.Module, sums: dict[str, torch.Tensor]):
        self.sums = sums
        self.batch_size = 0
        self.image_rows: torch.Tensor | None = None
        self.handles = []
        covered: set[str] = set()
        for prefix, module in model.named_modules():
            rule = self._rule_for(module)
            if rule is None:
                continue
            names = {f"{prefix}.{n}" if prefix else n: p for n, p in module.named_parameters(recurse=rule.recurse)
                     if p.requires_grad}
            if not names or names.keys() <= covered:  # empty, or handled by an enclosing module's rule
                continue
            covered |= set(names)
            self.handles.append(module.register_forward_hook(self._forward_hook(prefix, rule)))
        missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in covered)
        if missing:
            kinds = sorted({type(model.get_submodule(n.rsplit(".", 1)[0])).__name__ for n in missing})
            raise ValueError(f"no per-sample gradient rule for {len(missing)} parameters (e.g. {missing[0]}) in "
                             f"modules of type {', '.join(kinds)}; use the 'batch' estimator for this model")

    @staticmethod
    def _rule_for(module: nn.Module) -> "_Rule | None":
        if type(module).__name__ == "CLIPVisionEmbeddings":
            return _Rule(_clip_embeddings, recurse=True)
        if isinstance(module, nn.Linear):
            return _Rule(_linear)
        if isinstance(module, nn.Embedding):
            return _Rule(_embedding)
        if isinstance(module, nn.LayerNorm):
            return _Rule(_layer_norm)
        if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            return _Rule(_rms_norm)
        if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.kernel_size == module.stride and not any(module.padding):
            return _Rule(_patch_conv)
        return None

    def _forward_hook(self, prefix: str, rule: "_Rule"):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled() or not output.requires_grad:
                return
            saved = inputs[0].detach()

            def on_grad(grad):
                for name, value in rule.compute(module, saved, grad.detach(), self).items():
                    key = f"{prefix}.{name}" if prefix else name
                    self.sums[key] += value.to(self.sums[key].device)

            output.register_hook(on_grad)
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


@dataclass(frozen=True)
class _Rule:
    compute: Callable
    recurse: bool = False


def _square_sum_outer(grads: list[torch.Tensor], inputs: list[torch.Tensor]) -> torch.Tensor:
    """sum over examples of (sum over rows g x^T)^2, one example at a time (memory: one weight)."""
    total = None
    for g, x in zip(grads, inputs):
        outer = g.float().T @ x.float()
        total = outer.square() if total is None else total.add_(outer.square())
    return total


def _linear(module: nn.Linear, x, g, engine) -> dict[str, torch.Tensor]:
    grads, inputs = _units(g, engine), _units(x, engine)
    result = {}
    if module.weight.requires_grad:
        result["weight"] = _square_sum_outer(grads, inputs)
    if module.bias is not None and module.bias.requires_grad:
        result["bias"] = torch.stack([unit.float().sum(0) for unit in grads]).square().sum(0)
    return result


def _embedding(module: nn.Embedding, ids, g, engine) -> dict[str, torch.Tensor]:
    if ids.shape[0] != engine.batch_size:
        raise ValueError(f"embedding looked up with leading size {ids.shape[0]} in a batch of {engine.batch_size}")
    total = torch.zeros_like(module.weight, dtype=torch.float32)
    for unit_ids, unit_grad in zip(ids, g):
        unique, inverse = unit_ids.reshape(-1).unique(return_inverse=True)
        summed = torch.zeros(len(unique), g.shape[-1], dtype=torch.float32, device=g.device)
        summed.index_add_(0, inverse, unit_grad.reshape(-1, g.shape[-1]).float())
        total.index_add_(0, unique, summed.square())
    return {"weight": total}



def _layer_norm(module: nn.LayerNorm, x, g, engine) -> dict[str, torch.Tensor]:
    xf = x.float()
    normalised = (xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(xf.var(-1, unbiased=False, keepdim=True) + module.eps)
    grads, rows = _units(g, engine), _units(normalised, engine)
    result = {"weight": torch.stack([(gu.float() * xu).sum(0) for gu, xu in zip(grads, rows)]).square().sum(0)}
    if module.bias is not None:
        result["bias"] = torch.stack([gu.float().sum(0) for gu in grads]).square().sum(0)
    return result


def _rms_norm(module, x, g, engine) -> dict[str, torch.Tensor]:
    xf = x.float()
    normalised = (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + module.variance_epsilon)).to(x.dtype)
    grads, rows = _units(g, engine), _units(normalised, engine)
    return {"weight": torch.stack([(gu.float() * xu.float()).sum(0) for gu, xu in zip(grads, rows)]).square().sum(0)}


def _patch_conv(module, x, g, engine) -> dict[str, torch.Tensor]:
    """A convolution whose kernel equals its stride is a Linear layer on flattened patches."""
    kernel = module.kernel_size
    if isinstance(module, nn.Conv2d):  # [B, C, H, W] -> [B, patches, C*kh*kw]
        patches = nn.functional.unfold(x, kernel, stride=kernel).transpose(1, 2)
        out = g.flatten(2).transpose(1, 2)
    else:  # Qwen2-VL: one patch per row, [N, C, t, h, w] with kernel == (t, h, w)
        patches = x.reshape(x.shape[0], -1)
        out = g.reshape(g.shape[0], -1)
    result = {"weight": _square_sum_outer(_units(out, engine), _units(patches, engine)).reshape(module.weight.shape)}
    if module.bias is not None:
        result["bias"] = torch.stack([u.float().sum(0) for u in _units(out, engine)]).square().sum(0)
    return result


def _clip_embeddings(module, pixels, g, engine) -> dict[str, torch.Tensor]:
    """CLIP's embedding block: class token, patch convolution and position table in one module
    (its position lookup is shared by the batch, so only the block's output keeps examples apart)."""
    result = {}
    if module.class_embedding.requires_grad:
        result["class_embedding"] = g[:, 0].float().square().sum(0)
    if module.position_embedding.weight.requires_grad:  # position p is used once per image, at row p
        result["position_embedding.weight"] = g.float().square().sum(0)
    if module.patch_embedding.weight.requires_grad:
        kernel = module.patch_embedding.kernel_size
        patches = nn.functional.unfold(pixels.to(module.patch_embedding.weight.dtype), kernel, stride=kernel)
        result["patch_embedding.weight"] = _square_sum_outer(list(g[:, 1:]), list(patches.transpose(1, 2))).reshape(
            module.patch_embedding.weight.shape)
    return result


def estimate_fisher(model: nn.Module, encoder: PromptEncoder, examples: Sequence[Example], *, batch_size: int,
                    estimator: str = "per_sample", device: torch.device | None = None,
                    description: str = "fisher", progress: Progress | None = None,
                    processes: Processes | None = None) -> FisherResult:
    """Diagonal Fisher of ``model`` on ``examples`` (all with an image, or all without).

    With ``progress``, the sums so far are saved as batches go and a rerun continues from them;
    batches are added in the same order either way, so the result is bit-identical. With
    ``processes``, batches are dealt round-robin to the processes and their sums and counts added
    up: the same batches, so the same result up to the order of float additions."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator '{estimator}' (known: {', '.join(ESTIMATORS)})")
    if not examples:
        raise ValueError("no examples to estimate a Fisher diagonal from")
    if len({e.image is None for e in examples}) > 1:
        raise ValueError("a Fisher split must be all image questions or all text questions")
    device = device or next(model.parameters()).device
    model.eval()  # no dropout: the gradients are those of the model as it is
    model.zero_grad(set_to_none=True)  # a gradient left from earlier work would be added in
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    sums = {name: torch.zeros(p.shape, dtype=torch.float32, device=device) for name, p in params.items()}
    hooks = _PerSampleHooks(model, sums) if estimator == "per_sample" else None
    # Parameter gradients are never kept: the batch estimator squares each one as it arrives, the
    # gradient estimator adds it as it is.
    grad_handles = [p.register_post_accumulate_grad_hook(_accumulate_and_free(sums[n], estimator))
                    for n, p in params.items()]
    count, first = 0, 0
    saved = progress.load() if progress else None
    if saved:
        for name, value in saved["sums"].items():
            sums[name].copy_(value)
        count, first = saved["count"], saved["next"]
    try:
        for start in tqdm(range(first, len(examples), batch_size), desc=description, mininterval=5,
                          initial=first // batch_size, total=-(-len(examples) // batch_size)):
            if processes and (start // batch_size) % processes.count != processes.rank:
                continue
            chunk = examples[start:start + batch_size]
            batch = {k: v.to(device) for k, v in encoder.collate([encoder.encode(e) for e in chunk]).items()}
            if hooks is not None:
                hooks.batch_size = len(chunk)
                grid = batch.get("image_grid_thw")
                hooks.image_rows = grid.prod(-1) if grid is not None else None
            losses = answer_nll(*answer_logits(model, batch))
            if not torch.isfinite(losses).all():
                raise FloatingPointError(f"{description}: non-finite loss in the batch starting at example {start}")
            (losses.mean() if estimator == "batch" else losses.sum()).backward()
            count += 1 if estimator == "batch" else len(chunk)
            if progress:
                progress.maybe_save({"sums": {n: v.cpu() for n, v in sums.items()}, "count": count,
                                     "next": start + batch_size, "step": start // batch_size + 1})
    finally:
        if hooks is not None:
            hooks.remove()
        for handle in grad_handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    if processes:
        for total in sums.values():
            processes.sum(total)
        count = int(processes.sum(torch.tensor(count, dtype=torch.long, device=device)))
    return FisherResult({n: s.cpu() for n, s in sums.items()}, count, estimator, examples[0].image is not None)


def _accumulate_and_free(total: torch.Tensor, estimator: str):
    """What a parameter's gradient adds to its sum (per_sample: nothing, its hooks did)."""
    def hook(parameter):
        if estimator == "batch":
            total.add_(parameter.grad.float().square())
        elif estimator == "gradient":
            total.add_(parameter.grad.float())
        parameter.grad = None
    return hook
