"""The package's source files a stage module imports, directly or not.

The workflow lists them as inputs of the stage's rule, so Snakemake reruns a stage (and what
follows) when its code changes, and only then. Imports are read from the source (``ast``), not
executed, so the walk is fast and a stage's heavy imports stay out of the workflow's parse.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "pipeline_steps"


def module_path(package_dir: Path, module: str) -> Path | None:
    """The file of ``pipeline_steps.a.b`` (a module or a package's ``__init__``), or None."""
    path = package_dir.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return path if path.exists() else None


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every ``pipeline_steps`` module (or attribute of one) ``module``'s source names in an import."""
    base = module if is_package else module.rsplit(".", 1)[0]
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                target = f"{parent}.{node.module}" if node.module else parent
            elif node.module and node.module.startswith(PACKAGE):
                target = node.module
            else:
                continue
            # ``from .x import y``: y may be a module of package x, or a name defined in x.
            targets += [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names if alias.name.startswith(PACKAGE)]
    return targets


def stage_sources(module: str, repo: Path) -> list[str]:
    """Sorted paths of every package file ``module`` (``pipeline_steps.<stage>``) depends on."""
    return list(_stage_sources(module, Path(repo)))


@functools.cache
def _stage_sources(module: str, repo: Path) -> tuple[str, ...]:
    """``stage_sources``, walked once per workflow parse: every job of a rule asks for the same
    files, and a study plans hundreds of jobs (re-reading the sources for each took most of a
    real config's dry run)."""
    package_dir = Path(repo) / PACKAGE
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = module_path(package_dir, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += imported_modules(ast.parse(path.read_text()), name, path.name == "__init__.py")
    return tuple(sorted(str(p) for p in seen))
