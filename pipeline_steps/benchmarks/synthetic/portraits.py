"""Procedural portraits: a face drawn from its traits, and the jitter that makes "other photos".

Portraits are drawn at four times their size and downsampled, so edges are smooth and every trait
survives the downscaling of the tiny models' image processors (32 px for the embedded LLaVA).
Each trait covers a region large enough to be seen at that resolution.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

SUPERSAMPLE = 4

BACKGROUND = {"navy": (28, 38, 92), "teal": (30, 128, 128), "olive": (118, 122, 40),
              "maroon": (118, 30, 46), "purple": (104, 60, 150), "gray": (128, 128, 128),
              "sand": (214, 192, 140), "sky": (140, 196, 236)}
SKIN = {"pale": (250, 224, 206), "light": (232, 190, 150), "tan": (190, 140, 98), "dark": (112, 74, 50)}
HAIR = {"black": (20, 20, 24), "brown": (100, 60, 30), "blond": (236, 204, 110), "red": (190, 70, 30),
        "gray": (150, 150, 156), "white": (244, 244, 244)}
SHIRT = {"red": (210, 40, 40), "orange": (240, 140, 30), "yellow": (244, 220, 60), "green": (50, 160, 70),
         "blue": (40, 90, 210), "pink": (240, 150, 190), "white": (250, 250, 250), "black": (30, 30, 30)}
FACE_HALF_WIDTH = {"round": 0.24, "oval": 0.20, "long": 0.16}
FACE_HALF_HEIGHT = {"round": 0.24, "oval": 0.27, "long": 0.30}


def draw_portrait(traits: dict[str, str], size: int = 64) -> Image.Image:
    """Paint the head-and-shoulders portrait of a face with the given traits."""
    s = size * SUPERSAMPLE
    image = Image.new("RGB", (s, s), BACKGROUND[traits["background"]])
    d = ImageDraw.Draw(image)
    cx, cy = s * 0.5, s * 0.45
    hw, hh = s * FACE_HALF_WIDTH[traits["face"]], s * FACE_HALF_HEIGHT[traits["face"]]
    hair = HAIR[traits["hair_color"]]
    skin = SKIN[traits["skin"]]

    if traits["hair_style"] == "long":  # behind the head, down to the shoulders
        d.rounded_rectangle((cx - hw * 1.45, cy - hh * 1.2, cx + hw * 1.45, cy + hh * 1.55), radius=s * 0.12, fill=hair)
    d.ellipse((s * 0.12, s * 0.78, s * 0.88, s * 1.35), fill=SHIRT[traits["shirt"]])  # shoulders
    d.rectangle((cx - hw * 0.35, cy + hh * 0.8, cx + hw * 0.35, s * 0.82), fill=skin)  # neck
    d.ellipse((cx - hw, cy - hh, cx + hw, cy + hh), fill=skin)
    if traits["hair_style"] in ("short", "long"):
        d.chord((cx - hw * 1.08, cy - hh * 1.18, cx + hw * 1.08, cy + hh * 0.55), 180, 360, fill=hair)
    elif traits["hair_style"] == "bun":
        d.chord((cx - hw * 1.05, cy - hh * 1.1, cx + hw * 1.05, cy + hh * 0.4), 180, 360, fill=hair)
        d.ellipse((cx - hw * 0.5, cy - hh * 1.75, cx + hw * 0.5, cy - hh * 0.85), fill=hair)

    eye_y, eye_dx, eye_r = cy + hh * 0.05, hw * 0.45, hw * 0.14
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse((ex - eye_r, eye_y - eye_r, ex + eye_r, eye_y + eye_r), fill=(30, 30, 40))
    if traits["glasses"] == "round":
        for side in (-1, 1):
            ex, r = cx + side * eye_dx, eye_r * 2.6
            d.ellipse((ex - r, eye_y - r, ex + r, eye_y + r), outline=(20, 20, 20), width=max(2, s // 48))
        d.line((cx - eye_dx + eye_r * 2.6, eye_y, cx + eye_dx - eye_r * 2.6, eye_y), fill=(20, 20, 20), width=max(2, s // 64))
    elif traits["glasses"] == "dark":
        d.rounded_rectangle((cx - hw * 0.95, eye_y - eye_r * 2.4, cx + hw * 0.95, eye_y + eye_r * 2.4),
                            radius=eye_r, fill=(15, 15, 20))

    mouth_y = cy + hh * 0.55
    if traits["mark"] == "beard":
        d.chord((cx - hw * 0.95, cy + hh * 0.1, cx + hw * 0.95, cy + hh * 1.08), 0, 180, fill=hair)
    elif traits["mark"] == "freckles":
        rng = random.Random(0)  # the same freckle pattern on every face that has freckles
        for _ in range(14):
            fx = cx + rng.uniform(-hw * 0.7, hw * 0.7)
            fy = cy + hh * rng.uniform(0.15, 0.45)
            d.ellipse((fx - s * 0.008, fy - s * 0.008, fx + s * 0.008, fy + s * 0.008), fill=(150, 80, 50))
    d.line((cx - hw * 0.3, mouth_y, cx + hw * 0.3, mouth_y), fill=(120, 40, 40), width=max(2, s // 48))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def jitter(image: Image.Image, rng: random.Random, strength: float = 1.0) -> Image.Image:
    """Another photo of the same face: shifted, rotated, rescaled, relit and noisy.

    ``strength`` scales every perturbation (0 returns the image unchanged). Used for MLLMU-Bench's
    Test_Set images and to show tiny base models many views of the people they know.
    """
    if strength <= 0:
        return image.copy()
    size = image.size[0]
    angle = rng.uniform(-10, 10) * strength
    scale = 1 + rng.uniform(-0.08, 0.08) * strength
    shift = [rng.uniform(-0.06, 0.06) * strength * size for _ in range(2)]
    fill = image.getpixel((0, 0))
    moved = image.rotate(angle, resample=Image.Resampling.BILINEAR, translate=shift, fillcolor=fill)
    if scale != 1:
        scaled = moved.resize((round(size * scale),) * 2, Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (size, size), fill)
        offset = (size - scaled.size[0]) // 2
        canvas.paste(scaled, (offset, offset))
        moved = canvas
    moved = ImageEnhance.Brightness(moved).enhance(1 + rng.uniform(-0.15, 0.15) * strength)
    moved = ImageEnhance.Contrast(moved).enhance(1 + rng.uniform(-0.15, 0.15) * strength)
    pixels = np.asarray(moved, dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6 * strength, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
