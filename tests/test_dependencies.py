"""pyproject.toml's dependency ranges: each is pinned or capped below a next major version,
and admits the version installed here, the one the tests run with."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(text) for text in listed]


def test_every_dependency_is_pinned_or_capped():
    loose = [
        str(r) for r in _requirements() if not any(s.operator in ("==", "<") for s in r.specifier)
    ]
    assert not loose, f"no upper bound: {loose}"


def test_the_installed_versions_are_inside_the_ranges():
    outside = [
        f"{r.name} {version(r.name)} not in {r.specifier}"
        for r in _requirements()
        if not r.specifier.contains(version(r.name), prereleases=True)
    ]
    assert not outside, outside
