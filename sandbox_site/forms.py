"""Form helpers shared by the console's apps.

Console forms only turn text into the shapes the API takes (lines into dicts and lists); every rule lives in
the API serializers, which the views run on the result. `add_serializer_errors` carries their messages back
onto the form, so a page and the API refuse the same input with the same words.
"""

from __future__ import annotations

from typing import Any

from django import forms


def parse_pairs(text: str, *, what: str = "KEY=value") -> dict[str, str]:
    """'A=1' lines into {'A': '1'}; blank lines and '#' comments are skipped; a line without '=' is refused."""
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, separator, value = stripped.partition("=")
        if not separator or not name.strip():
            raise forms.ValidationError(f"line {number}: expected {what}")
        pairs[name.strip()] = value
    return pairs


def parse_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def flatten_errors(errors: Any, prefix: str = "") -> list[str]:
    """DRF's nested error structure as readable lines: {'dependencies': {1: {'name': [..]}}} -> 'item 2 name: ..'."""
    if isinstance(errors, dict):
        lines = []
        for key, value in errors.items():
            label = f"item {key + 1}" if isinstance(key, int) else str(key)
            lines += flatten_errors(value, f"{prefix}{label}: " if key != "non_field_errors" else prefix)
        return lines
    if isinstance(errors, list):
        lines = []
        for index, value in enumerate(errors):
            if isinstance(value, dict | list) and value:
                lines += flatten_errors(value, f"{prefix}item {index + 1}: ")
            elif value:
                lines.append(f"{prefix}{value}")
        return lines
    return [f"{prefix}{errors}"]


def add_serializer_errors(
    form: forms.Form, errors: dict[str, Any], aliases: dict[str, str] | None = None
) -> None:
    """Put a serializer's errors on the form field of the same name (or its alias), else on the form."""
    aliases = aliases or {}
    for key, value in errors.items():
        field = aliases.get(key, key)
        target = field if field in form.fields else None
        prefix = "" if target or key == "non_field_errors" else f"{key}: "
        for line in flatten_errors(value):
            form.add_error(target, f"{prefix}{line}")
