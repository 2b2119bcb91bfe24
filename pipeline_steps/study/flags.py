"""How the workflow turns config settings into a stage's command-line flags."""

from __future__ import annotations

import shlex
from typing import Iterable


def cli_flags(settings: dict) -> str:
    """``{"batch_size": 4, "modalities": ["vqa"], "fast": True}`` -> ``--batch-size 4 --modalities vqa
    --fast`` (values quoted for the shell where they need it; a False switch and an unset (None)
    setting are left out)."""
    parts = []
    for key, value in settings.items():
        if value is None:
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):  # a switch: given or not
            parts += [flag] if value else []
            continue
        values = value if isinstance(value, list) else [value]
        parts.append(f"{flag} " + " ".join(shlex.quote(str(v)) for v in values))
    return " ".join(parts)


def labelled_flags(flag: str, pairs: Iterable[tuple[str, str]]) -> str:
    """``--cell 'label=path' ...`` for the report stages, quoted for the shell."""
    return " ".join(f"{flag} {shlex.quote(f'{label}={path}')}" for label, path in pairs)


def hyperparameter_flags(hyperparameters: dict) -> str:
    """A method's own hyper-parameters as the unlearn stage takes them (``--hparam beta=0.4``)."""
    return " ".join(f"--hparam {shlex.quote(f'{name}={value}')}" for name, value in hyperparameters.items())
