"""Per-session Python dependencies: how requested packages merge."""

from __future__ import annotations

import re


def normalise_package_name(name: str) -> str:
    """PEP 503 normalisation: `Foo_Bar.baz` and `foo-bar-baz` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def merge_dependencies(current: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """Merge by normalised package name; a later entry replaces an earlier one, order of first mention kept."""
    merged: dict[str, dict[str, str]] = {}
    for dep in [*current, *new]:
        entry = {"name": dep["name"]}
        if dep.get("version"):
            entry["version"] = dep["version"]
        merged[normalise_package_name(dep["name"])] = entry
    return list(merged.values())
