"""Generic visual questions about random faces: the "pretraining" of a tiny vision tower.

A real MLLM arrives at unlearning with a vision encoder that already sees hair, glasses and
backgrounds. A tiny model built from random weights does not, so ``build_base`` first teaches it
to read the traits of random faces, drawn apart from the benchmark's people.
"""

from __future__ import annotations

import random

from PIL import Image

from .portraits import draw_portrait, jitter
from .world import TRAITS, random_traits


def perception_items(rng: random.Random, faces: int, image_size: int, questions_per_face: int = 2):
    """(image, question, answer, other values of the trait) about ``faces`` new random faces."""
    items: list[tuple[Image.Image, str, str, list[str]]] = []
    for _ in range(faces):
        traits = random_traits(rng)
        image = jitter(draw_portrait(traits, image_size), rng, strength=0.5)
        for trait in rng.sample(TRAITS, questions_per_face):
            answer = traits[trait.key]
            items.append((image, trait.question, answer, [v for v in trait.values if v != answer]))
    return items


def perception_vocabulary() -> list[str]:
    return [t.question for t in TRAITS] + [" ".join(t.values) for t in TRAITS]
