"""Saved progress of a long loop, so that a job killed part-way resumes where it stopped.

A loop saves its whole state (trainable tensors, optimizer and scheduler, every random number
generator, the batches of the current epoch still to come, its log) to the stage's scratch
folder, at most every ``every_minutes`` (0: after every step). A rerun of the job finds the file
and continues from it; since everything that decides the next step is restored, the final
weights are bit-identical to those of an uninterrupted run. The state records the settings and
inputs it belongs to and is ignored (and replaced) when they differ. The folder is not a
Snakemake output, so it survives the failed job, and the stage deletes it once its outputs are
in place.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path

import torch

from ..storage import atomic_file

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
# Part of every state's identity; raised whenever what a loop saves changes shape, so progress left
# by an older version of the code is ignored (and replaced) rather than misread.
STATE_LAYOUT = 2


def rng_state(rng: random.Random) -> dict:
    state = {"python": rng.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(rng: random.Random, state: dict) -> None:
    rng.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Progress:
    """The scratch folder of one job's progress (``None``: never saved, the loop runs through)."""

    def __init__(self, folder: Path | str | None, identity: dict, every_minutes: float = 10.0,
                 state_file: str = STATE_FILE):
        self.folder = Path(folder) if folder else None
        self.state_file = state_file
        self.identity = identity
        self.every = every_minutes * 60
        self.last = time.monotonic()

    def load(self) -> dict | None:
        """The saved state of this very job, or None to start from the beginning."""
        if self.folder is None or not (self.folder / self.state_file).exists():
            return None
        state = torch.load(self.folder / self.state_file, map_location="cpu", weights_only=False)
        if state.get("identity") != self.identity:
            log.warning("ignoring the progress in %s: it belongs to other settings or inputs", self.folder)
            return None
        log.info("resuming from step %d saved in %s", state["step"], self.folder)
        return state

    def maybe_save(self, state: dict) -> None:
        if self.folder is None or time.monotonic() - self.last < self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.folder / self.state_file, "wb") as handle:
            torch.save({**state, "identity": self.identity}, handle)
        self.last = time.monotonic()

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            parameters[name].copy_(value)


def add_progress_arguments(parser) -> None:
    parser.add_argument("--progress-dir", type=Path, default=None,
                        help="where to save progress for resuming (default: <out>.progress; 'none' disables)")
    parser.add_argument("--save-every-minutes", type=float, default=10.0,
                        help="save progress at most this often (0: after every step)")


def job_progress(args, *inputs_identity: str, state_file: str = STATE_FILE) -> Progress:
    """The progress of the job ``args`` describes; ``inputs_identity`` names its inputs' content
    (model fingerprints, a digest of the data), so a rerun on changed inputs starts afresh."""
    folder = args.progress_dir or Path(f"{args.out}.progress")
    if str(folder) == "none":
        folder = None
    ignored = {"threads", "device", "progress_dir", "save_every_minutes"}
    identity = {key: str(value) for key, value in sorted(vars(args).items()) if key not in ignored}
    identity["inputs"] = list(inputs_identity)
    identity["layout"] = str(STATE_LAYOUT)
    return Progress(folder, identity, args.save_every_minutes, state_file)


def examples_digest(examples) -> str:
    """A digest of training examples' text and images, to tell whether a job's data changed."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for example in examples:
        digest.update(repr((example.question, example.answer)).encode())
        if example.image is not None:
            digest.update(example.image.tobytes())
    return digest.hexdigest()
