"""How much of an AdamW run survives when the weights themselves are bfloat16.

    python perf/bf16_updates.py [--learning-rate 2e-5] [--steps 20] [--std 0.02]

Weights drawn like a 7B decoder's (normal, std 0.02) take the same AdamW steps from the same
random gradients three ways: in float32 (the reference), in bfloat16 (the weights are the
optimizer's parameters), and as the training stages do it (a float32 copy trained, rounded to
bfloat16 once at the end; ``pipeline_steps/training/precision.py``). Printed per way: the
fraction of entries whose stored bfloat16 value moved, and the displacement from the start
relative to the float32 run's (1.0 = all of it arrived).
"""

from __future__ import annotations

import argparse

import torch


def adamw_steps(weights: torch.Tensor, gradients: list[torch.Tensor], learning_rate: float) -> torch.Tensor:
    parameter = torch.nn.Parameter(weights.clone())
    optimizer = torch.optim.AdamW([parameter], lr=learning_rate, weight_decay=0.0)
    for gradient in gradients:
        parameter.grad = gradient.to(parameter.dtype)
        optimizer.step()
    return parameter.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--std", type=float, default=0.02)
    parser.add_argument("--entries", type=int, default=2_000_000)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    start = (torch.randn(args.entries, generator=generator) * args.std).to(torch.bfloat16)
    # A persistent direction plus noise, as a loss pushing the same way step after step.
    direction = torch.randn(args.entries, generator=generator)
    gradients = [direction + torch.randn(args.entries, generator=generator) for _ in range(args.steps)]

    exact = adamw_steps(start.float(), gradients, args.learning_rate)
    ways = {"float32 (reference)": exact,
            "bfloat16 weights": adamw_steps(start, gradients, args.learning_rate).float(),
            "float32 copy, stored bfloat16": exact.to(torch.bfloat16).float()}
    reference = (exact - start.float()).norm()
    print(f"{args.steps} AdamW steps at lr {args.learning_rate:g} on {args.entries:,} weights of std {args.std:g}")
    print(f"{'':32s} {'entries moved (bf16)':>22s} {'displacement / float32':>24s}")
    for name, final in ways.items():
        moved = (final.to(torch.bfloat16) != start).float().mean().item()
        displacement = ((final - start.float()).norm() / reference).item()
        print(f"{name:32s} {moved:22.3f} {displacement:24.3f}")


if __name__ == "__main__":
    main()
