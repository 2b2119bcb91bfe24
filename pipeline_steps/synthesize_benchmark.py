"""Stage: draw the synthetic world and write it as an MLLMU-Bench dataset directory.

    python -m pipeline_steps.synthesize_benchmark --out results/synthetic/raw --seed 0

The output is read by ``prepare_benchmark`` exactly like a local clone of MLLMU-Bench.
"""

from __future__ import annotations

from pathlib import Path

from .benchmarks.synthetic.mllmu_writer import write_mllmu_dataset
from .benchmarks.synthetic.world import sample_world
from .cli import run_stage, stage_parser
from .storage import atomic_directory


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fictitious-profiles", type=int, default=100,
                        help="people the vanilla model learns (MLLMU-Bench has 500)")
    parser.add_argument("--real-profiles", type=int, default=20,
                        help="well-known people the base model already knows (MLLMU-Bench has 153)")
    parser.add_argument("--holdout-profiles", type=int, default=0,
                        help="fictitious-like people no model is trained on (for membership inference)")
    parser.add_argument("--image-size", type=int, default=64, help="portrait side in pixels")
    parser.add_argument("--test-images", type=int, default=3, help="transformed portraits per Test_Set profile")
    return parser


def main(args) -> None:
    profiles = sample_world(args.seed, args.fictitious_profiles, args.real_profiles, args.holdout_profiles)
    with atomic_directory(args.out) as scratch:
        write_mllmu_dataset(profiles, scratch, seed=args.seed, image_size=args.image_size,
                            test_images=args.test_images)


if __name__ == "__main__":
    run_stage(main, build_parser())
