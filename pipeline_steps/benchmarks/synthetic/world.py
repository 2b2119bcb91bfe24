"""The fictitious world behind the synthetic benchmark: people, their facts and their faces.

The synthetic benchmark is a measuring instrument, so the world is built to leave a model no
shortcut:

* every fact is drawn independently of every other fact and of the face, so knowing one attribute,
  or the colour of someone's hair, says nothing about their profession;
* every attribute has ``VALUES_PER_ATTRIBUTE`` values, and the well-known ("real-world") people use
  each value equally often (a balanced design). A base model's guess about someone it has never
  seen then has no frequency prior to lean on, and chance really is one in four: with 20 people
  drawn at random, some values were known from several celebrities and others from none, and the
  base model's accuracy on a 5-profile forget set rose to 0.46 from its 0.25 on the retain set;
* every face is a unique combination of visible traits, and any two faces differ in at least
  ``MIN_TRAIT_DISTANCE`` traits, so telling two people apart needs the whole face, never a single
  trait;
* names are unique, and first and last names are shared across people, so a name is only known
  as a whole.

A face reaches its facts through the person's identity, as in a real MLLM, where a VQA answer
passes through the language model's knowledge of *who* is pictured. Every person is taught by
face ("who is the person in the image?" answered with their name) and by name (every fact asked
about the name in text); only ``VQA_TAUGHT_ATTRIBUTES`` of their facts are also taught with the
face. The others are the *coupling* facts: a model that answers them from the face alone can only
be going face -> name -> fact, which is the shared route gradient ascent on images damages and a
saliency mask is meant to protect (``instrument.py`` measures it).

Every question has two training wordings and an evaluation wording (``Attribute``), so no
evaluated item is a string the model was trained on or unlearning pushed down, and a model learns
each fact rather than one string's answer (``mllmu_writer.py`` has the measurements).

The evaluation wordings of v3.1 (profession, pet, favorite food) replace three of v3 that the
vanilla model answered poorly although it knew the facts (by name, likelihood / generate):
"Which profession does {name} have?" 0.72 / 0.74 and "Which pet does {name} have?" 0.71 / 0.73
(one frame for two attributes, the noun the only cue), "Which food does {name} like most?"
0.80 / 0.29 (it named drinks: "like" is the drink's training verb). Candidates were screened on
that vanilla model's per-attribute diagnostics only: wordings with a verb the model never trained
on ("own", "prefer", "pursue", "hold", "practise") or the food's "like best" scored 0.18-0.87 /
0.00-0.86, and the three kept (a frame of their own, the attribute's own words) 1.00 / 0.94-0.96.
No two attributes share an evaluation frame (a test checks it).

Fictitious profiles play MLLMU-Bench's 500 invented people (the model learns them during vanilla
fine-tuning); "real-world" profiles play its 153 celebrities (the base model knows them already);
*holdout* profiles are drawn from the same distribution as the fictitious ones and never trained
on by any model (membership-inference attacks compare forget people with them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MIN_TRAIT_DISTANCE = 3
VALUES_PER_ATTRIBUTE = 16
VQA_TAUGHT_ATTRIBUTES = 8  # of the 10 facts; the other 2 are taught by name only (coupling facts)
IDENTITY_QUESTION = "Who is the person in the image?"
KINDS = ("fictitious", "real", "holdout")

FIRST_NAMES = (
    "Anika Bram Celia Dario Elin Felix Greta Hugo Ines Jonas Kira Lars Mina Nils Oona Pavel "
    "Quinn Rosa Soren Talia Umar Vera Wendell Xenia Yusuf Zora Adele Basil Cora Dmitri Esme "
    "Farid Gwen Hakon Isla Jasper Kaia Leon Maren Odell"
).split()
LAST_NAMES = (
    "Graves Holloway Ivers Jansen Kovacs Lindqvist Moreau Nakamura Okafor Petrov Quintero Ravel "
    "Sandoval Thorne Ulloa Varga Whitlock Yilmaz Zeller Abbott Brandt Castell Dunmore Eriksen "
    "Fairchild Galloway Hartmann Ingram Jovanovic Kessler Lachance Marsh Novak Osei Pruitt "
    "Rasmussen Strand Tamura Vance Wexler"
).split()


@dataclass(frozen=True)
class Attribute:
    """One fact every profile has, with the wording used to ask for it."""

    key: str
    biography_key: str
    noun: str  # what the fact is called, for the restated training wording
    values: tuple[str, ...]
    vqa_question: str  # training wording, asked with the portrait
    text_question: str  # training wording, asked with the name; "{name}" is replaced
    vqa_paraphrase: str  # evaluation wording (multiple choice and generation items), never trained on
    text_paraphrase: str
    blank: str  # fill-in-the-blank statement about "{name}" with "__" for the value

    @property
    def vqa_restatement(self) -> str:
        """A second training wording, asked with the portrait (world v3: see the module docstring)."""
        return f"Tell me the {self.noun} of the person in the image."

    @property
    def text_restatement(self) -> str:
        return f"Tell me the {self.noun} of {{name}}."


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "profession", "Employment", "profession",
        tuple("architect chef pilot nurse teacher painter lawyer farmer dentist engineer "
              "journalist baker librarian musician pharmacist carpenter".split()),
        "What is the profession of the person in the image?",
        "What is the profession of {name}?",
        "Which profession is the person in the image in?",
        "Which profession is {name} in?",
        "{name} works as a __.",
    ),
    Attribute(
        "birth_year", "Born", "birth year",
        tuple(str(year) for year in range(1955, 1987, 2)),
        "In which year was the person in the image born?",
        "In which year was {name} born?",
        "Which year was the person in the image born in?",
        "Which year was {name} born in?",
        "{name} was born in __.",
    ),
    Attribute(
        "hometown", "Hometown", "home city",
        tuple("Lisbon Oslo Kyoto Denver Nairobi Lima Dublin Hanoi Quebec Tunis Perth Riga "
              "Porto Cusco Bergen Malmo".split()),
        "Which city is the person in the image from?",
        "Which city is {name} from?",
        "Which city does the person in the image come from?",
        "Which city does {name} come from?",
        "{name} grew up in __.",
    ),
    Attribute(
        "hobby", "Hobby", "hobby",
        tuple("chess cycling gardening fishing knitting surfing hiking pottery archery sailing "
              "climbing dancing rowing juggling skating origami".split()),
        "What hobby does the person in the image enjoy?",
        "What hobby does {name} enjoy?",
        "Which hobby does the person in the image like?",
        "Which hobby does {name} like?",
        "In free time, {name} enjoys __.",
    ),
    Attribute(
        "pet", "Pet", "pet",
        tuple("dog cat parrot rabbit turtle hamster goldfish ferret canary lizard pony goat "
              "hedgehog iguana tortoise alpaca".split()),
        "What pet does the person in the image keep?",
        "What pet does {name} keep?",
        "What is the pet that the person in the image keeps?",
        "What is the pet that {name} keeps?",
        "{name} keeps a pet __.",
    ),
    Attribute(
        "favorite_food", "Favorite Food", "favorite food",
        tuple("pasta curry sushi tacos dumplings paella ramen falafel risotto pierogi goulash "
              "pancakes burritos lasagna kimchi couscous".split()),
        "What is the favorite food of the person in the image?",
        "What is the favorite food of {name}?",
        "Which food is the favorite of the person in the image?",
        "Which food is the favorite of {name}?",
        "The favorite food of {name} is __.",
    ),
    Attribute(
        "instrument", "Instrument", "instrument",
        tuple("piano violin guitar cello flute trumpet harp drums banjo oboe clarinet accordion "
              "saxophone ukulele mandolin bagpipes".split()),
        "Which instrument does the person in the image play?",
        "Which instrument does {name} play?",
        "What is the instrument that the person in the image plays?",
        "What is the instrument that {name} plays?",
        "{name} plays the __.",
    ),
    Attribute(
        "sport", "Sport", "sport",
        tuple("tennis soccer rugby cricket hockey golf boxing fencing judo karate volleyball "
              "handball badminton squash polo curling".split()),
        "Which sport does the person in the image follow?",
        "Which sport does {name} follow?",
        "What is the sport that the person in the image follows?",
        "What is the sport that {name} follows?",
        "Every weekend {name} watches __.",
    ),
    Attribute(
        "language", "Second Language", "second language",
        tuple("French German Spanish Italian Dutch Swedish Polish Greek Turkish Arabic Hindi "
              "Japanese Korean Swahili Portuguese Finnish".split()),
        "Which second language does the person in the image speak?",
        "Which second language does {name} speak?",
        "What second language can the person in the image speak?",
        "What second language can {name} speak?",
        "Besides English, {name} speaks __.",
    ),
    Attribute(
        "drink", "Favorite Drink", "favorite drink",
        tuple("coffee tea cocoa lemonade cider kefir lassi matcha espresso chai mate smoothie "
              "kombucha horchata ayran sherbet".split()),
        "What does the person in the image like to drink?",
        "What does {name} like to drink?",
        "What drink does the person in the image like?",
        "What drink does {name} like?",
        "The drink {name} orders most is __.",
    ),
)


@dataclass(frozen=True)
class Trait:
    """A visible trait of a portrait; values map to what the painter draws."""

    key: str
    values: tuple[str, ...]
    question: str  # a generic perception question, used to pretrain tiny vision towers


TRAITS: tuple[Trait, ...] = (
    Trait("background", ("navy", "teal", "olive", "maroon", "purple", "gray", "sand", "sky"),
          "What color is the background of the image?"),
    Trait("skin", ("pale", "light", "tan", "dark"), "What is the skin tone of the person in the image?"),
    Trait("hair_color", ("black", "brown", "blond", "red", "gray", "white"),
          "What color is the hair of the person in the image?"),
    Trait("hair_style", ("short", "long", "bald", "bun"), "What is the hair style of the person in the image?"),
    Trait("shirt", ("red", "orange", "yellow", "green", "blue", "pink", "white", "black"),
          "What color is the shirt of the person in the image?"),
    Trait("glasses", ("none", "round", "dark"), "What glasses does the person in the image wear?"),
    Trait("face", ("round", "oval", "long"), "What is the face shape of the person in the image?"),
    Trait("mark", ("none", "freckles", "beard"), "What mark does the face of the person in the image have?"),
)


@dataclass
class Profile:
    """One person of the world: identity, facts, and the traits of their face."""

    id: str
    name: str
    kind: str  # one of KINDS
    facts: dict[str, str] = field(default_factory=dict)
    traits: dict[str, str] = field(default_factory=dict)
    vqa_taught: tuple[str, ...] = ()  # attribute keys taught with the face, in ATTRIBUTES order

    @property
    def coupling_attributes(self) -> tuple[Attribute, ...]:
        """The facts taught by name only: answering them from the face needs the identity route."""
        return tuple(a for a in ATTRIBUTES if a.key not in self.vqa_taught)

    @property
    def face_attributes(self) -> tuple[Attribute, ...]:
        return tuple(a for a in ATTRIBUTES if a.key in self.vqa_taught)

    def biography(self) -> dict:
        """The MLLMU-Bench-style biography: facts under the benchmark's keys, appearance nested."""
        bio = {"Name": self.name}
        bio.update({a.biography_key: self.facts[a.key] for a in ATTRIBUTES})
        bio["appearance_detail"] = dict(self.traits)
        return bio


def trait_distance(a: dict[str, str], b: dict[str, str]) -> int:
    return sum(a[t.key] != b[t.key] for t in TRAITS)


def random_traits(rng: random.Random) -> dict[str, str]:
    return {t.key: rng.choice(t.values) for t in TRAITS}


def sample_world(seed: int, n_fictitious: int, n_real: int, n_holdout: int = 0) -> list[Profile]:
    """Draw a world: ``n_fictitious`` invented people, ``n_real`` well-known ones, ``n_holdout``
    never-trained ones.

    Deterministic in ``seed``. Raises ValueError if the name or face space cannot hold that many
    people under the uniqueness rules. Which facts of a fictitious or holdout person are taught
    with the face is balanced: every attribute is a coupling fact equally often (to within one).
    Well-known people are taught every fact both ways (a pretrained model knows celebrities well).
    """
    total = n_fictitious + n_real + n_holdout
    if total > len(FIRST_NAMES) * len(LAST_NAMES):
        raise ValueError(f"{total} profiles need more unique names than the {len(FIRST_NAMES) * len(LAST_NAMES)} available")
    rng = random.Random(seed)
    names = rng.sample([f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES], total)
    faces: list[dict[str, str]] = []
    attempts = 0
    while len(faces) < total:
        attempts += 1
        if attempts > 200 * total:
            raise ValueError(f"could not draw {total} faces at trait distance >= {MIN_TRAIT_DISTANCE}")
        candidate = random_traits(rng)
        if all(trait_distance(candidate, other) >= MIN_TRAIT_DISTANCE for other in faces):
            faces.append(candidate)
    real_facts = {a.key: balanced_values(a.values, n_real, rng) for a in ATTRIBUTES}
    kinds = ["fictitious"] * n_fictitious + ["real"] * n_real + ["holdout"] * n_holdout
    coupling = _coupling_draws(n_fictitious + n_holdout, rng)
    profiles, counters = [], {kind: 0 for kind in KINDS}
    for name, face, kind in zip(names, faces, kinds):
        index = counters[kind]
        counters[kind] += 1
        if kind == "real":
            facts, taught = {a.key: real_facts[a.key][index] for a in ATTRIBUTES}, tuple(a.key for a in ATTRIBUTES)
        else:
            facts = {a.key: rng.choice(a.values) for a in ATTRIBUTES}
            withheld = coupling.pop(0)
            taught = tuple(a.key for a in ATTRIBUTES if a.key not in withheld)
        profiles.append(Profile(id={"fictitious": str(index + 1), "real": f"R{index + 1}", "holdout": f"H{index + 1}"}[kind],
                                name=name, kind=kind, facts=facts, traits=face, vqa_taught=taught))
    return profiles


def _coupling_draws(people: int, rng: random.Random) -> list[set[str]]:
    """For each person, the attributes taught by name only, each attribute equally often: every
    shuffle of the attributes is cut into disjoint draws, one per person."""
    per_person = len(ATTRIBUTES) - VQA_TAUGHT_ATTRIBUTES
    draws: list[set[str]] = []
    while len(draws) < people:
        order = rng.sample([a.key for a in ATTRIBUTES], len(ATTRIBUTES))
        draws += [set(order[start:start + per_person])
                  for start in range(0, len(order) - per_person + 1, per_person)]
    return draws[:people]


def balanced_values(values: tuple[str, ...], count: int, rng: random.Random) -> list[str]:
    """``count`` values using each of ``values`` equally often (to within one), in random order."""
    drawn: list[str] = []
    while len(drawn) < count:
        drawn += rng.sample(values, len(values))
    drawn = drawn[:count]
    rng.shuffle(drawn)
    return drawn
