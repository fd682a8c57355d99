"""Template helpers of the web console: status badges, JSON, sizes, durations and page links."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.http import QueryDict
from django.utils.safestring import SafeString

from sandbox_site.badges import status_badge
from sandbox_site.host_paths import public_text

register = template.Library()


@register.filter
def badge(status: str) -> SafeString:
    """`{{ session.status|badge }}`: the coloured badge the admin shows too."""
    return status_badge(str(status))


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON; autoescaping still applies where it is printed."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def filesize(value: Any) -> str:
    """1536 -> '1.5 KiB'; None or '' -> '–'."""
    if value in (None, ""):
        return "–"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@register.filter
def mib(value: Any) -> str:
    """A size in MiB as the API writes it: 512 -> '512Mi', 2048 -> '2Gi'."""
    if value in (None, ""):
        return "–"
    number = int(value)
    return f"{number // 1024}Gi" if number % 1024 == 0 else f"{number}Mi"


@register.filter
def millis(value: Any) -> str:
    """Milliseconds for people: 12.3 -> '12 ms', 4200 -> '4.2 s'."""
    if value in (None, ""):
        return "–"
    number = float(value)
    return f"{number:.0f} ms" if number < 1000 else f"{number / 1000:.1f} s"


@register.simple_tag(takes_context=True)
def query(context: template.Context, **changes: Any) -> str:
    """The current query string with `changes` applied (None or '' removes a key), for filter and page links."""
    params: QueryDict = context["request"].GET.copy()
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = str(value)
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.filter(name="public_text")
def public_text_filter(value: Any) -> str:
    """Runtime text without the server's host paths (see sandbox_site/host_paths.py)."""
    return public_text(str(value or ""))
