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

    def like(self, tensor: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
        """``tensor`` (shaped like the whole parameter) placed as ``parameter``: on its device, and
        cut into the same shard when the parameter is sharded."""
        if isinstance(parameter, DTensor):
            return distribute_tensor(tensor.to(parameter.device), parameter.device_mesh, parameter.placements,
                                     src_data_rank=None)
        return tensor.to(parameter.device)

    def sum_gradients(self, parameters) -> None:
        if self.count == 1 or self.sharded:  # sharded: FSDP reduce-scattered them in backward
            return
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)

    def whole_parameters(self, model: torch.nn.Module, dtypes: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
        """Every parameter whole, on the host in ``dtypes[name]``, on the main process (empty on the
        others, which only take part in gathering the shards)."""
        values = {}
        for name, parameter in model.named_parameters():
            value = whole(parameter.detach())
            if self.is_main:
                values[name] = value.to("cpu", dtypes[name])
        return values

    def close(self) -> None:
        """End the process group (gloo aborts at exit otherwise)."""
        if self.count > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a possibly sharded tensor (gathering it is a collective call: every process makes it)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
