"""What a saliency mean divides by: the examples of its set that reach the tensor.

A Fisher file holds sums, so the saliency of a tensor over a set of splits (S_T, S_P) is a sum of
sums over a count. A text-only example never runs the vision tower or the connector
(``models/families.parts_reached``): its squared gradient there is zero because it never meets
those weights, not because they do not matter to it. Counting such examples would scale the
vision side's S_P by the image share of P; with the paper's P (forget text QA, retain VQA, retain
text QA) that share is 2,970 of 6,970 pairs in the embedded default, so the vision tower and the
connector were masked as with beta 0.43 while the language model had beta 1. So each split's file
records, part by part, how many of its terms (examples, or batches for the ``batch`` estimator)
reach that part (``COUNTS``), and

    S(tensor) = sum over the set's splits of their sums / sum of their counts for the tensor's part

which is the mean over the examples that can reach the tensor. Image splits reach every part, so
for the language model this is the plain union rule (sum of sums over sum of counts).

This is what the authors do. Their mask script (``data_process/MLLMU_gen_mask.py`` with
``Mask_Our`` in ``SFRon.py``, Z1zs/MMUnlearner) builds one mask per module group from its own
preserve loader: for ``vision_tower`` and ``multi_modal_projector`` the retain VQA pairs alone;
for ``language_model`` one shuffled loader over the text QA of every fictitious profile
(``Full_Set``, the forget profiles' included) concatenated with the retain VQA pairs. Their CLEAR
script (``CLEAR_gen_mask.py``, Qwen2-VL) likewise gives ``visual`` (the merger included) the
retain captions alone, and the language model the text-only TOFU rows of ``full+tofu`` (every
author's) with the retain captions. Each preserve Fisher is divided by its own loader's number of
batches, i.e. it is the mean over that set, and the forget Fisher (forget VQA) by the forget
loader's. The paper's P read by this rule gives the same set on each side (forget text + retain
text is ``Full_Set``'s text QA) and the same normalisation, per example where they average per
mini-batch (their estimator: ``saliency/fisher.py``). The target set follows the same rule; a
text-only target has zero sums on the vision side whatever they are divided by, so its vision
entries are never selected.
"""

from __future__ import annotations

import json

from ..models.families import PARTS, parts_reached

COUNTS = "sample_count_by_part"  # the metadata key: JSON {part: count}


def counts_by_part(count: int, images: bool) -> dict[str, int]:
    """How many of a split's ``count`` terms reach each part, its examples having images or not."""
    reached = parts_reached(images)
    return {part: count if part in reached else 0 for part in PARTS}


def encode(counts: dict[str, int]) -> str:
    return json.dumps(counts, sort_keys=True)


def read_counts(metadata: dict[str, str], where: str) -> dict[str, int]:
    """The per-part counts of a Fisher file's metadata; a file written before they existed (whose
    vision side would be averaged over text examples it never saw) is refused with the fix."""
    if COUNTS not in metadata:
        raise ValueError(f"{where} has no '{COUNTS}' (how many of its examples reach the vision tower, the "
                         f"connector and the language model): it was written before saliency means were taken over "
                         f"the examples that reach each tensor; rerun compute_fisher for it "
                         f"(snakemake --forcerun compute_fisher, or delete the file)")
    counts = json.loads(metadata[COUNTS])
    if sorted(counts) != sorted(PARTS) or not all(isinstance(n, int) and n >= 0 for n in counts.values()):
        raise ValueError(f"{where}: '{COUNTS}' must give a count >= 0 for each of {', '.join(PARTS)}, not "
                         f"{metadata[COUNTS]}")
    return counts
