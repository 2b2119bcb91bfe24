"""A small CLEAR in the hub dataset's layout, written as parquet files with its column names and types.

Ten fictitious authors with three face images each (captions name the author) and two TOFU
questions each; forget01/05/10 are the last 1/2/3 authors (TOFU takes the forget authors from the
end), retain99/95/90 the others. The ``+tofu`` configs hold the image rows (``question`` and
``answer`` empty) and the text rows (``image`` None); the ``_perturbed`` configs add
``paraphrased_caption``, ``perturbed_captions`` and ``perturbed_names``; ``real_faces`` and
``real_world`` carry ``options`` that are the wrong answers. Read with ``datasets.load_dataset(<dir>,
<config>)``, as the hub copy is.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import datasets
from PIL import Image

AUTHORS = [f"{first} {last}" for first, last in zip(
    ("Amara", "Bastian", "Chiara", "Dmitri", "Elif", "Farrukh", "Greta", "Hiroshi", "Ines", "Jonah"),
    ("Okafor", "Lindqvist", "Ferraro", "Volkov", "Aydin", "Nazarov", "Holm", "Tanaka", "Moreau", "Whitfield"))]
IMAGES_PER_AUTHOR = 3
FORGET_AUTHORS = {1: AUTHORS[9:], 5: AUTHORS[8:], 10: AUTHORS[7:]}
# retain_perturbed: the first image of authors 0-6 and of author 8 (a forget author at 5 % and 10 %).
RETAIN_PERTURBED = [(author, 0) for author in AUTHORS[:7]] + [(AUTHORS[8], 0)]
# retain90_perturbed (read instead of retain_perturbed at 10 %): the second image of authors 0-1.
RETAIN90_PERTURBED = [(author, 1) for author in AUTHORS[:2]]
CELEBRITIES = ["Marie Curie", "Nelson Mandela", "Frida Kahlo", "Alan Turing"]

IMAGE = datasets.Image()
TEXT = datasets.Value("string")
TEXTS = datasets.List(datasets.Value("string"))
FEATURES = {
    "plain": datasets.Features({"image": IMAGE, "caption": TEXT, "name": TEXT}),
    "tofu": datasets.Features({"image": IMAGE, "caption": TEXT, "question": TEXT, "answer": TEXT}),
    "perturbed": datasets.Features({"image": IMAGE, "caption": TEXT, "name": TEXT, "paraphrased_caption": TEXT,
                                    "perturbed_captions": TEXTS, "perturbed_names": TEXTS}),
    "real_faces": datasets.Features({"image": IMAGE, "answer": TEXT, "options": TEXTS}),
    "real_world": datasets.Features({"question": TEXT, "answer": TEXT, "image": IMAGE, "prompt": TEXT,
                                     "options": TEXTS}),
}


def png(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (24, 24), tuple(rng.randrange(256) for _ in range(3)))
    image.putpixel((rng.randrange(24), rng.randrange(24)), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_of(author: str, index: int) -> dict:
    return {"bytes": png(AUTHORS.index(author) * 100 + index), "path": None}


def caption(author: str, index: int) -> str:
    return f"{author} is shown in a portrait, picture {index}, smiling near a bookshelf."


def questions(author: str) -> list[tuple[str, str]]:
    k = AUTHORS.index(author)
    return [(f"Where was {author} born?", f"{author} was born in the city of Town{k}."),
            (f"What genre does {author} write?", f"{author} writes mostly genre number {k} novels.")]


def image_rows(authors) -> list[dict]:
    return [{"image": image_of(a, i), "caption": caption(a, i), "name": a}
            for a in authors for i in range(IMAGES_PER_AUTHOR)]


def tofu_rows(authors) -> list[dict]:
    rows = [{"image": image_of(a, i), "caption": caption(a, i), "question": None, "answer": None}
            for a in authors for i in range(IMAGES_PER_AUTHOR)]
    return rows + [{"image": None, "caption": None, "question": q, "answer": ans}
                   for a in authors for q, ans in questions(a)]


def perturbed_names(author: str) -> list[str]:
    if author == AUTHORS[9]:
        return [AUTHORS[0]]  # too few wrong names: topped up from other authors
    k = AUTHORS.index(author)
    return [f"Wrong{k} Name{j}" for j in range(3)]


def perturbed_rows(pairs) -> list[dict]:
    return [{"image": image_of(a, i), "caption": caption(a, i), "name": a,
             "paraphrased_caption": f"A portrait of {a}, number {i}.",
             "perturbed_captions": [f"A portrait of someone else, number {i}."], "perturbed_names": perturbed_names(a)}
            for a, i in pairs]


def clear_configs() -> dict[str, tuple[str, list[dict]]]:
    """Config name -> (feature set, rows)."""
    configs = {"full": ("plain", image_rows(AUTHORS)), "full+tofu": ("tofu", tofu_rows(AUTHORS))}
    for ratio, forget in FORGET_AUTHORS.items():
        retain = [a for a in AUTHORS if a not in forget]
        configs[f"forget{ratio:02d}"] = ("plain", image_rows(forget))
        configs[f"retain{100 - ratio}"] = ("plain", image_rows(retain))
        configs[f"forget{ratio:02d}+tofu"] = ("tofu", tofu_rows(forget))
        configs[f"retain{100 - ratio}+tofu"] = ("tofu", tofu_rows(retain))
        configs[f"forget{ratio:02d}_perturbed"] = (
            "perturbed", perturbed_rows([(a, i) for a in forget for i in range(IMAGES_PER_AUTHOR)]))
    configs["retain_perturbed"] = ("perturbed", perturbed_rows(RETAIN_PERTURBED))
    configs["retain90_perturbed"] = ("perturbed", perturbed_rows(RETAIN90_PERTURBED))
    wrong = ["Ada Lovelace", "Pablo Neruda", "Rosa Parks"]
    configs["real_faces"] = ("real_faces", [
        {"image": {"bytes": png(5000 + k), "path": None}, "answer": name,
         "options": wrong + ([name] if k == 0 else [])}  # one row lists the answer among its options
        for k, name in enumerate(CELEBRITIES)])
    configs["real_world"] = ("real_world", [
        {"question": f"Which landmark is shown, number {k}?", "answer": f"Landmark {k}",
         "image": {"bytes": png(6000 + k), "path": None}, "prompt": f"Which landmark is shown, number {k}? ...",
         "options": [f"Landmark {j}" for j in range(4) if j != k]} for k in range(4)])
    return configs


def write_clear(out_dir: Path, configs: dict[str, tuple[str | datasets.Features, list[dict]]] | None = None) -> Path:
    """Write ``configs`` (default: ``clear_configs()``) as a hub-style dataset directory; a config's
    kind names one of ``FEATURES`` or is a ``Features`` of its own (an older revision's columns)."""
    out_dir = Path(out_dir)
    configs = clear_configs() if configs is None else configs
    card = ["---", "configs:"]
    for name, (kind, rows) in configs.items():
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        features = FEATURES[kind] if isinstance(kind, str) else kind
        datasets.Dataset.from_list(rows, features=features).to_parquet(
            str(out_dir / name / "train-00000-of-00001.parquet"))
        card += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}/train-*"]
    card += ["---", "", "# A small CLEAR for tests", ""]
    (out_dir / "README.md").write_text("\n".join(card))
    return out_dir
