"""The two install routes (pip via pyproject.toml, conda via environment.yml) install the same things."""

import tomllib

import yaml

from helpers import REPO


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_lists = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict)]
    assert len(pip_lists) == 1, "environment.yml should have exactly one pip: section"
    assert set(pip_lists[0]) == wanted


def test_torch_is_pinned_everywhere():
    """An unpinned torch pulls a multi-GB CUDA build; both files must pin it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("torch==") for dep in project["dependencies"])
    assert "torch==" in (REPO / "environment.yml").read_text()
