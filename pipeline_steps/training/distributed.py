"""Training, unlearning and Fisher estimation on several processes, with the result of one.

Launched with ``accelerate launch --multi_gpu --num_processes N -m pipeline_steps.<stage> ...``
(or ``torchrun``; on CPU the processes talk over gloo), every process draws the same global
batches from the same seeded shuffle and takes its share of each. Its loss terms are weighted
by its share of the global batch (``len(local) / len(global)``), so summing the processes'
gradients gives exactly the gradient of the global batch mean that a single process computes,
up to the order of float additions. Every process then holds the same gradient, clips it the
same way and takes the same optimizer step, so the weights never drift apart and no broadcast
is needed.

The model is not wrapped in DistributedDataParallel: MMUnlearner's update masks the forget
gradient before the retain gradient is added, two backward passes per step, and DDP would
all-reduce after each. Here gradients are summed once per step, after masking; since every
process holds the same mask, masking commutes with the sum.

A process whose share of a (last, small) global batch is empty runs on one example with weight
zero, so every process takes part in every collective call.

Full-parameter unlearning of a 7B model needs more memory than one GPU has (float32 weights,
gradients and AdamW moments: 16 bytes per parameter). Launched with an FSDP config
(``accelerate launch --config_file profiles/accelerate/fsdp.yaml``, which sets
``ACCELERATE_USE_FSDP``), the unlearning loop shards the model and its reference model with
FSDP2's ``fully_shard``, one unit per transformer layer: each process keeps 1/N of every weight,
gradient and optimizer moment. Gradients are then reduce-scattered in every backward pass
(summed, not averaged: the loss weights already make the sum the global mean). MMUnlearner's
two backward passes stay correct because masking is elementwise: each process multiplies its
shard of the summed forget gradient by the same shard of the mask before the retain gradient is
added to it, which equals masking every process's gradient before summing.

On the host, a sharded process keeps only its part too: of the start weights (``HostCopy``, the
rows of each tensor its shard holds, in the storage dtype, compared against at epoch ends and
when writing) and of the mask (read from its file row-wise, ``Processes.place``), and the changes
are written one tensor at a time, each gathered to the main process only then
(``unlearning/weights.py``'s ``write_changes``): 0.75 bytes per parameter per process at 4
processes, against 3 (and 5 on the main process) when every process kept whole copies
(``perf/host_memory.py``, ``docs/performance.md``).
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import parse_flag_from_env
from torch.distributed.tensor import DTensor, distribute_tensor

log = logging.getLogger(__name__)


class Processes:
    """This process's place among the launched ones."""

    def __init__(self, accelerator: Accelerator):
        self.rank = accelerator.process_index
        self.count = accelerator.num_processes
        self.is_main = accelerator.is_main_process
        self.device = accelerator.device
        self.sharded = False  # set by shard()

    def share(self, batch: list) -> tuple[list, float]:
        """This process's part of a global batch and the weight of its loss terms."""
        local = batch[self.rank::self.count]
        if not local:
            return batch[:1], 0.0
        return local, len(local) / len(batch)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over processes, in place."""
        if self.count > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @property
    def shards(self) -> bool:
        """Whether ``shard`` shards: several processes launched with an FSDP config."""
        return self.count > 1 and parse_flag_from_env("ACCELERATE_USE_FSDP")

    def shard(self, *models: torch.nn.Module) -> None:
        """Shard ``models`` across the processes if the job was launched with an FSDP config."""
        if not self.shards:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard
        from transformers.modeling_layers import GradientCheckpointingLayer

        mesh = init_device_mesh(self.device.type, (self.count,))
        for model in models:
            # Every decoder and vision layer of a transformers model is a GradientCheckpointingLayer.
            for layer in [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            for module in model.modules():
                if isinstance(module, FSDPModule):
                    module.set_gradient_divide_factor(1.0)
                    module.set_force_sum_reduction_for_comms(True)  # a plain sum (gloo has no pre-scaled one)
        self.sharded = True
        log.info("sharded %d model(s) over %d processes (FSDP2)", len(models), self.count)

    def rows(self, parameter: torch.Tensor) -> tuple[int, int] | None:
        """The rows (a range of dim 0) of the whole ``parameter`` that this process holds, or None
        when it holds all of it (FSDP2 shards every tensor along dim 0, as ``torch.chunk``)."""
        if not isinstance(parameter, DTensor):
            return None
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(parameter.shape, parameter.device_mesh,
                                                              parameter.placements)
        if tuple(shape[1:]) != tuple(parameter.shape[1:]) or any(offset[1:]):
            raise ValueError(f"a shard of shape {shape} at {offset} is not a range of rows of {tuple(parameter.shape)}")
        return offset[0], offset[0] + shape[0]

    def place(self, source, name: str, parameter: torch.Tensor) -> torch.Tensor:
        """``source[name]`` (shaped like the whole parameter) placed as ``parameter``: on its device
        and, when the parameter is sharded, only this process's rows, read as such (never whole)
        when ``source`` can read rows (``saliency.tensor_files.TensorFile.read_rows``)."""
        span = self.rows(parameter)
        if span is None:
            return source[name].to(parameter.device)
        part = source.read_rows(name, *span) if hasattr(source, "read_rows") else source[name][span[0]:span[1]]
        return self.placed_part(part, parameter)

    def placed_part(self, part: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
        """This process's ``part`` of a tensor shaped like the sharded ``parameter``, as a DTensor
        placed like it, on the parameter's device."""
        return DTensor.from_local(part.to(parameter.device).contiguous(), parameter.device_mesh,
                                  parameter.placements, shape=parameter.shape, stride=parameter.stride())

    def sum_gradients(self, parameters) -> None:
        if self.count == 1 or self.sharded:  # sharded: FSDP reduce-scattered them in backward
            return
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)

    def close(self) -> None:
        """End the process group (gloo aborts at exit otherwise)."""
        if self.count > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a possibly sharded tensor (gathering it is a collective call: every process makes it)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a possibly sharded tensor (all of it when not sharded)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class HostCopy:
    """A host copy of a model's parameters in their storage dtypes, of only the part of each that
    this process holds: its rows when the model is sharded (1/N of every tensor), all of it
    otherwise. Unlearning compares against it at epoch ends and when writing what changed.

    Made before training (``HostCopy(model)`` records the storage dtypes, before the trained tensors
    are upcast), filled by ``capture`` once the model is sharded; or from a whole copy already
    held (``HostCopy.of``), which ``capture`` cuts down to this process's rows."""

    def __init__(self, model: torch.nn.Module | None = None):
        self.dtypes = {name: p.dtype for name, p in model.named_parameters()} if model is not None else {}
        self.parts: dict[str, torch.Tensor] = {}
        self.captured = False

    @classmethod
    def of(cls, values: dict[str, torch.Tensor]) -> "HostCopy":
        copy = cls()
        copy.dtypes = {name: value.dtype for name, value in values.items()}
        copy.parts = {name: value.to("cpu") for name, value in values.items()}
        return copy

    def capture(self, parameters: dict[str, torch.Tensor], processes: "Processes") -> None:
        """Keep this process's part of every parameter (once; later calls, a resumed run's, keep it)."""
        if self.captured:
            return
        with torch.no_grad():
            for name, parameter in parameters.items():
                if name in self.parts:  # a whole copy given up front: keep its rows
                    span = processes.rows(parameter)
                    part = self.parts[name] if span is None else self.parts[name][span[0]:span[1]]
                    self.parts[name] = part.clone() if span is not None else part
                else:
                    self.parts[name] = local(parameter.detach()).to("cpu", self.dtypes[name], copy=True)
        self.captured = True

    def nbytes(self) -> int:
        return sum(part.numel() * part.element_size() for part in self.parts.values())

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.parts[name]

    def changed(self, parameters: dict[str, torch.Tensor], processes: "Processes") -> dict[str, int]:
        """Per tensor, how many entries of ``parameters`` differ from the copy once cast to the storage
        dtype, over all processes (a collective call when sharded: every process makes it)."""
        names = list(parameters)
        with torch.no_grad():
            counts = torch.tensor([int((local(parameters[n].detach()).to("cpu", self.dtypes[n]) != self.parts[n]).sum())
                                   for n in names], dtype=torch.int64)
        if any(isinstance(parameter, DTensor) for parameter in parameters.values()):  # each counted its shard
            counts = counts.to(processes.device)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return dict(zip(names, counts.tolist()))

    def whole_pair(self, name: str, parameter: torch.Tensor, processes: "Processes"):
        """(the whole parameter, its whole start value), both on the host in the storage dtype, on the
        main process; None on the others. Sharded, both are gathered (a collective call), one tensor
        at a time."""
        with torch.no_grad():
            if not isinstance(parameter, DTensor):
                return (parameter.detach().to("cpu", self.dtypes[name]), self.parts[name]) if processes.is_main else None
            value = parameter.detach().full_tensor()
            start = processes.placed_part(self.parts[name], parameter).full_tensor()
        if not processes.is_main:
            return None
        return value.to("cpu", self.dtypes[name]), start.to("cpu")
