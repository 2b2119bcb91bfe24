"""What the environment check's dataset and model checks share: asking the Hugging Face hub
whether a repository is there, and the findings they report.

One answer (``HubAnswer``) serves the dataset and the model checks alike, so both word the same
situation the same way: switched off, refused, or out of reach. The hub is asked with a short
timeout: on a node whose firewall drops outgoing traffic the only answer is a timeout, and the
check is meant to report quickly, not to wait on the library's default.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .cli import StageError

HUB_TIMEOUT_S = 15
# The variables that switch the hub off for each kind of repository (``datasets`` has its own).
OFF_SWITCHES = {"model": "HF_HUB_OFFLINE", "dataset": "HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE)"}


@dataclass
class Finding:
    """One thing the environment check found: a problem stops the run, a warning only is logged."""

    subject: str
    problem: str
    fix: str
    warning: bool = False


def stop_on_problems(findings: list[Finding], check: str, log: logging.Logger) -> None:
    """Log the warnings; raise every problem at once, numbered with its fix, so that one run of the
    check tells the user everything to fix rather than the first thing."""
    for finding in findings:
        if finding.warning:
            log.warning("%s: %s", finding.subject, finding.problem)
    problems = [f for f in findings if not f.warning]
    if problems:
        lines = [f"{check} found {len(problems)} problem(s); nothing was started:"]
        for number, finding in enumerate(problems, start=1):
            lines += [f"  {number}. {finding.subject}: {finding.problem}.", f"     Fix: {finding.fix}."]
        raise StageError("\n".join(lines))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_off(datasets_too: bool = False) -> bool:
    return env_flag("HF_HUB_OFFLINE") or (datasets_too and env_flag("HF_DATASETS_OFFLINE"))


def hub_status(repo_id: str, repo_type: str) -> tuple[str, str]:
    """("reachable" | "denied" | "unreachable", detail), asking the hub with a short timeout."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "denied", "it is gated: accept its terms on its hub page and set HF_TOKEN"
    except RepositoryNotFoundError:
        return "denied", "the hub does not know it (a misspelt id, or a private repository without HF_TOKEN)"
    except Exception as error:  # noqa: BLE001 - any failure to connect means the same here
        return "unreachable", f"{type(error).__name__}: {str(error)[:200]}"
    return "reachable", ""


@dataclass(frozen=True)
class HubAnswer:
    status: str  # "off" (not asked), or what hub_status said
    detail: str
    repo_type: str  # "model" | "dataset"

    @property
    def reachable(self) -> bool:
        return self.status == "reachable"

    def fallback(self) -> str:
        """Why a complete local copy is used instead (a warning)."""
        return {"off": "the hub is switched off", "denied": self.detail,
                "unreachable": "the hub is unreachable"}[self.status]

    def failure(self) -> str:
        """Why the hub cannot serve the repository, ending in a comma for what the cache lacks."""
        return {"off": f"{OFF_SWITCHES[self.repo_type]} is set, so the hub is not asked,",
                "denied": f"the hub refuses it ({self.detail}),",
                "unreachable": f"the hub cannot be reached ({self.detail}),"}[self.status]


def ask_hub(repo_id: str, repo_type: str) -> HubAnswer:
    """The hub's answer, without asking when the user switched it off for this kind of repository."""
    if hub_off(datasets_too=repo_type == "dataset"):
        return HubAnswer("off", "", repo_type)
    return HubAnswer(*hub_status(repo_id, repo_type), repo_type)
