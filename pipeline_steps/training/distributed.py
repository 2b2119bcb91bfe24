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
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import Accelerator


class Processes:
    """This process's place among the launched ones."""

    def __init__(self, accelerator: Accelerator):
        self.rank = accelerator.process_index
        self.count = accelerator.num_processes
        self.is_main = accelerator.is_main_process

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

    def sum_gradients(self, parameters) -> None:
        if self.count == 1:
            return
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)

    def wait(self) -> None:
        if self.count > 1:
            dist.barrier()

    def close(self) -> None:
        """End the process group (gloo aborts at exit otherwise)."""
        if self.count > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
