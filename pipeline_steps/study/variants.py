"""The names of model variants, the one grammar every stage, path and label uses.

A variant is a model the study evaluates: a starting point (``base``, ``vanilla``, or ``oracle``,
the base model fine-tuned on the retain set only, which never saw the forget people), or an
unlearned one named after its method, with the saliency mask it was restricted to for a masked
method (``mmunlearner/beta~1.0/modules~all``, and ``.../control~random`` for a control mask of the
same per-tensor sparsity: ``saliency/masks.py``; SalUn's mask is fixed by the method's own
``mask_fraction`` setting, so ``salun`` names no mask), then the sweep point it was run at
(``ga_diff/lr~0.0003/epochs~2/seed~0``). A calibrated run of the equal-forgetting comparison is
its row's protocol point, unlearned until it forgets as much as the oracle, once per seed, under
the prefix ``calibrated/`` (``calibrated/ga_diff/lr~0.0003/seed~1``): a prefix, not a segment
after the point's, so no variant's directory holds another's (``ga`` and its calibrated runs).
The name is also the variant's directory under ``unlearn/`` and ``eval/``, so a sweep point is a
path a user can read.

A sweep point names exactly the settings the config gives as a *list* (an axis), one
``/<setting>~<value>`` segment each in the order of the method's settings, and no others: the
full settings of a job are in its ``manifest.json``. So a config without lists keeps the plain
names (``ga``), appending a value to an axis adds names and renames none (the cached points stay
valid), and a setting the code adds later renames nothing. Turning a scalar into a list (even of
one value) renames that method's points once: write an axis as a list from the start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable

from ..unlearning.methods import get_method, uses_fisher_ratio_mask

STARTING_POINTS = ("base", "vanilla", "oracle")  # the models that were not unlearned
CALIBRATED = "calibrated"  # the prefix of a calibrated run: unlearned until the oracle's forgetting
# A setting's name in a variant name, where the field's own name is long.
SETTING_LABELS = {"learning_rate": "lr", "batch_size": "bs", "weight_decay": "wd", "max_grad_norm": "clip",
                  "warmup_ratio": "warmup"}
_SEGMENT = r"[a-z][a-z0-9_]*~[^/~\s]+"
GRAMMAR = re.compile(rf"^(?P<calibrated>{CALIBRATED}/)?(?P<method>[a-z][a-z0-9_]*)"
                     r"(/beta~(?P<beta>[^/~\s]+)/modules~(?P<modules>[a-z]+)(/control~(?P<control>[a-z_]+))?)?"
                     rf"(?P<settings>(/{_SEGMENT})*)$")


def beta_label(beta) -> str:
    """The directory label of a mask's beta: the config's number as a float (1 -> "1.0")."""
    return repr(float(beta))


def value_label(value) -> str:
    """A setting's value in a variant name: the shortest text Python reads back as the same number
    (3.0e-4 -> "0.0003", 2 -> "2", True -> "true")."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def setting_segments(swept: Iterable[tuple[str, object]]) -> tuple[tuple[str, str], ...]:
    """``(("learning_rate", 3e-4), ("seed", 0))`` -> ``(("lr", "0.0003"), ("seed", "0"))``."""
    return tuple((SETTING_LABELS.get(name, name), value_label(value)) for name, value in swept)


@dataclass(frozen=True)
class Variant:
    method: str  # a starting point or an unlearning method's name
    beta: str | None = None  # the mask's beta label, for a masked method
    modules: str | None = None  # the mask's module group, for a masked method
    control: str | None = None  # a control mask's kind; None: the paper's Fisher-ratio mask
    settings: tuple[tuple[str, str], ...] = ()  # (label, value) of each swept setting, in the name's order
    calibrated: bool = False  # unlearned until it forgets as much as the oracle (unlearning/calibration.py)

    @property
    def name(self) -> str:
        mask = "" if self.beta is None else f"/beta~{self.beta}/modules~{self.modules}"
        mask += "" if self.control is None else f"/control~{self.control}"
        prefix = f"{CALIBRATED}/" if self.calibrated else ""
        return prefix + self.method + mask + "".join(f"/{label}~{value}" for label, value in self.settings)

    @property
    def unlearned(self) -> bool:
        return self.method not in STARTING_POINTS

    @property
    def seed(self) -> str | None:
        return dict(self.settings).get("seed")

    def calibrated_at(self, seed) -> Variant:
        """This point's calibrated run with ``seed``: ``calibrated/<point>/seed~<seed>``."""
        return replace(self, settings=(*self.point.settings, ("seed", value_label(seed))), calibrated=True)

    @property
    def row(self) -> Variant:
        """The method (and mask) alone: what a table row compares, whatever point it was run at."""
        return replace(self, settings=(), calibrated=False)

    @property
    def point(self) -> Variant:
        """The operating point: every swept setting but the seed, whose values are repeats of it."""
        return replace(self, settings=tuple(s for s in self.settings if s[0] != "seed"))

    @classmethod
    def parse(cls, name: str) -> Variant:
        match = GRAMMAR.match(name)
        if not match:
            raise ValueError(f"'{name}' is not a variant name (base, vanilla, oracle, a method, "
                             "method/beta~B/modules~G, then optionally /setting~value per swept setting; "
                             f"a calibrated run prefixed {CALIBRATED}/)")
        settings = tuple(tuple(s.split("~")) for s in match["settings"].split("/")[1:])
        variant = cls(match["method"], match["beta"], match["modules"], match["control"], settings,
                      match["calibrated"] is not None)
        if variant.unlearned and uses_fisher_ratio_mask(get_method(variant.method)) != (variant.beta is not None):
            raise ValueError(f"'{name}' is not a variant name: method '{variant.method}' "
                             + ("is masked: name its mask (method/beta~B/modules~G)" if variant.beta is None
                                else "has no mask"))
        return variant


def unlearned_variants(methods: Iterable[str], betas: Iterable, module_groups: Iterable[str],
                       sweeps: dict[str, list] | None = None, controls: Iterable[str] = ()) -> list[Variant]:
    """Every unlearned variant of a run: one per method, methods with a Fisher-ratio mask once per beta, module
    group and mask (the Fisher-ratio mask, then each of ``controls``), each once per sweep point
    (``sweeps``: method -> the swept ``(setting, value)`` pairs of each of its points; a method
    without one has a single point that sweeps nothing)."""
    variants = []
    for method in methods:
        masks = ([(beta_label(b), g, c) for b in betas for g in module_groups for c in (None, *controls)]
                 if uses_fisher_ratio_mask(get_method(method)) else [(None, None, None)])
        points = (sweeps or {}).get(method, [()])
        variants += [Variant(method, beta, modules, control, setting_segments(swept))
                     for beta, modules, control in masks for swept in points]
    return variants
