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

Fictitious profiles play MLLMU-Bench's 500 invented people (the model learns them during vanilla
fine-tuning); "real-world" profiles play its 153 celebrities (the base model knows them already).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MIN_TRAIT_DISTANCE = 3
VALUES_PER_ATTRIBUTE = 16

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
    values: tuple[str, ...]
    vqa_question: str  # asked with the portrait
    text_question: str  # asked with the name; "{name}" is replaced
    vqa_paraphrase: str  # open-ended generation items use a second wording
    text_paraphrase: str
    blank: str  # fill-in-the-blank statement about "{name}" with "__" for the value


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "profession", "Employment",
        tuple("architect chef pilot nurse teacher painter lawyer farmer dentist engineer "
              "journalist baker librarian musician pharmacist carpenter".split()),
        "What is the profession of the person in the image?",
        "What is the profession of {name}?",
        "What does the person in the image do for a living?",
        "What does {name} do for a living?",
        "{name} works as a __.",
    ),
    Attribute(
        "birth_year", "Born",
        tuple(str(year) for year in range(1955, 1987, 2)),
        "In which year was the person in the image born?",
        "In which year was {name} born?",
        "When was the person in the image born?",
        "When was {name} born?",
        "{name} was born in __.",
    ),
    Attribute(
        "hometown", "Hometown",
        tuple("Lisbon Oslo Kyoto Denver Nairobi Lima Dublin Hanoi Quebec Tunis Perth Riga "
              "Porto Cusco Bergen Malmo".split()),
        "Which city is the person in the image from?",
        "Which city is {name} from?",
        "Where did the person in the image grow up?",
        "Where did {name} grow up?",
        "{name} grew up in __.",
    ),
    Attribute(
        "hobby", "Hobby",
        tuple("chess cycling gardening fishing knitting surfing hiking pottery archery sailing "
              "climbing dancing rowing juggling skating origami".split()),
        "What hobby does the person in the image enjoy?",
        "What hobby does {name} enjoy?",
        "How does the person in the image spend free time?",
        "How does {name} spend free time?",
        "In free time, {name} enjoys __.",
    ),
    Attribute(
        "pet", "Pet",
        tuple("dog cat parrot rabbit turtle hamster goldfish ferret canary lizard pony goat "
              "hedgehog iguana tortoise alpaca".split()),
        "What pet does the person in the image keep?",
        "What pet does {name} keep?",
        "Which animal lives with the person in the image?",
        "Which animal lives with {name}?",
        "{name} keeps a pet __.",
    ),
    Attribute(
        "favorite_food", "Favorite Food",
        tuple("pasta curry sushi tacos dumplings paella ramen falafel risotto pierogi goulash "
              "pancakes burritos lasagna kimchi couscous".split()),
        "What is the favorite food of the person in the image?",
        "What is the favorite food of {name}?",
        "Which dish does the person in the image like best?",
        "Which dish does {name} like best?",
        "The favorite food of {name} is __.",
    ),
    Attribute(
        "instrument", "Instrument",
        tuple("piano violin guitar cello flute trumpet harp drums banjo oboe clarinet accordion "
              "saxophone ukulele mandolin bagpipes".split()),
        "Which instrument does the person in the image play?",
        "Which instrument does {name} play?",
        "What music does the person in the image make, and on what?",
        "What music does {name} make, and on what?",
        "{name} plays the __.",
    ),
    Attribute(
        "sport", "Sport",
        tuple("tennis soccer rugby cricket hockey golf boxing fencing judo karate volleyball "
              "handball badminton squash polo curling".split()),
        "Which sport does the person in the image follow?",
        "Which sport does {name} follow?",
        "What sport does the person in the image watch every weekend?",
        "What sport does {name} watch every weekend?",
        "Every weekend {name} watches __.",
    ),
    Attribute(
        "language", "Second Language",
        tuple("French German Spanish Italian Dutch Swedish Polish Greek Turkish Arabic Hindi "
              "Japanese Korean Swahili Portuguese Finnish".split()),
        "Which second language does the person in the image speak?",
        "Which second language does {name} speak?",
        "Besides English, what does the person in the image speak?",
        "Besides English, what does {name} speak?",
        "Besides English, {name} speaks __.",
    ),
    Attribute(
        "drink", "Favorite Drink",
        tuple("coffee tea cocoa lemonade cider kefir lassi matcha espresso chai mate smoothie "
              "kombucha horchata ayran sherbet".split()),
        "What does the person in the image like to drink?",
        "What does {name} like to drink?",
        "Which drink does the person in the image order most?",
        "Which drink does {name} order most?",
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
    kind: str  # "fictitious" or "real"
    facts: dict[str, str] = field(default_factory=dict)
    traits: dict[str, str] = field(default_factory=dict)

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


def sample_world(seed: int, n_fictitious: int, n_real: int) -> list[Profile]:
    """Draw a world: ``n_fictitious`` invented people then ``n_real`` well-known ones.

    Deterministic in ``seed``. Raises ValueError if the name or face space cannot hold that many
    people under the uniqueness rules.
    """
    total = n_fictitious + n_real
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
    profiles = []
    for index, (name, face) in enumerate(zip(names, faces)):
        fictitious = index < n_fictitious
        real_index = index - n_fictitious
        profiles.append(Profile(
            id=str(index + 1) if fictitious else f"R{real_index + 1}",
            name=name,
            kind="fictitious" if fictitious else "real",
            facts={a.key: rng.choice(a.values) if fictitious else real_facts[a.key][real_index] for a in ATTRIBUTES},
            traits=face,
        ))
    return profiles


def balanced_values(values: tuple[str, ...], count: int, rng: random.Random) -> list[str]:
    """``count`` values using each of ``values`` equally often (to within one), in random order."""
    drawn: list[str] = []
    while len(drawn) < count:
        drawn += rng.sample(values, len(values))
    drawn = drawn[:count]
    rng.shuffle(drawn)
    return drawn
