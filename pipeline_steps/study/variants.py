"""The names of model variants, the one grammar every stage, path and label uses.

A variant is a model the study evaluates: ``base``, ``vanilla``, or an unlearned one named after
its method, with the saliency mask it was restricted to for a masked method
(``mmunlearner/beta~1.0/modules~all``). The name is also the variant's directory under
``unlearn/`` and ``eval/``, so a sweep point is a path a user can read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..unlearning.methods import get_method

STARTING_POINTS = ("base", "vanilla")  # the models before unlearning
GRAMMAR = re.compile(r"^(?P<method>[a-z][a-z0-9_]*)(/beta~(?P<beta>[^/]+)/modules~(?P<modules>[a-z]+))?$")


def beta_label(beta) -> str:
    """The directory label of a mask's beta: the config's number as a float (1 -> "1.0")."""
    return repr(float(beta))


@dataclass(frozen=True)
class Variant:
    method: str  # "base", "vanilla" or an unlearning method's name
    beta: str | None = None  # the mask's beta label, for a masked method
    modules: str | None = None  # the mask's module group, for a masked method

    @property
    def name(self) -> str:
        return self.method if self.beta is None else f"{self.method}/beta~{self.beta}/modules~{self.modules}"

    @property
    def unlearned(self) -> bool:
        return self.method not in STARTING_POINTS

    @classmethod
    def parse(cls, name: str) -> Variant:
        match = GRAMMAR.match(name)
        if not match:
            raise ValueError(f"'{name}' is not a variant name (base, vanilla, a method, or "
                             "method/beta~B/modules~G)")
        return cls(**match.groupdict())


def unlearned_variants(methods: Iterable[str], betas: Iterable, module_groups: Iterable[str]) -> list[Variant]:
    """Every unlearned variant of a run: one per method, masked methods once per beta and module
    group."""
    variants = []
    for method in methods:
        if get_method(method).needs_mask:
            variants += [Variant(method, beta_label(b), g) for b in betas for g in module_groups]
        else:
            variants.append(Variant(method))
    return variants
