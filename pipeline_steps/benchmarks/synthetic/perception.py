"""Generic visual questions about random faces: the "pretraining" of a tiny vision tower.

A real MLLM arrives at unlearning with a vision encoder that already sees hair, glasses and
backgrounds. A tiny model built from random weights does not, so ``build_base`` first teaches it
to read the traits of random faces, drawn apart from the benchmark's people.
"""

from __future__ import annotations

import random

from PIL import Image

from ...models.encoding import multiple_choice_question
from .mllmu_writer import draw_options, lettered_answer
from .portraits import draw_portrait, jitter
from .world import TRAITS, random_traits


def perception_items(rng: random.Random, faces: int, image_size: int, questions_per_face: int = 2):
    """(image, question, answer) about ``faces`` new random faces. Every second question is put as
    MLLMU-Bench's lettered multiple choice (up to four of the trait's values, answered with the
    letter): fresh items that teach the format itself, as instruction tuning teaches a real MLLM."""
    items: list[tuple[Image.Image, str, str]] = []
    for _ in range(faces):
        traits = random_traits(rng)
        image = jitter(draw_portrait(traits, image_size), rng, strength=0.5)
        for trait in rng.sample(TRAITS, questions_per_face):
            answer = traits[trait.key]
            if len(items) % 2 == 0:
                items.append((image, trait.question, answer))
                continue
            letters, right = draw_options(trait.values, answer, rng)
            items.append((image, multiple_choice_question(trait.question, letters), lettered_answer(answer, right)))
    return items


def perception_vocabulary() -> list[str]:
    return [t.question for t in TRAITS] + [" ".join(t.values) for t in TRAITS]
