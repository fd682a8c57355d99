"""Template helpers of the web console: status badges, JSON, sizes, durations and page links."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django import template
from django.http import QueryDict
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

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


def _time_tag(value: datetime, text: str) -> SafeString:
    exact = formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact, text)


@register.filter
def when(value: Any) -> SafeString | str:
    """The exact time as the admin writes it too (`2026-12-05 18:13:17 UTC`, see sandbox_site/formats)."""
    if not isinstance(value, datetime):
        return "–"
    return _time_tag(value, formats.date_format(timezone.localtime(value), "DATETIME_FORMAT"))


@register.filter
def ago(value: Any) -> SafeString | str:
    """`just now` under a minute (never "0 minutes ago"), else `5 minutes ago`; the exact time as its title."""
    if not isinstance(value, datetime):
        return "–"
    if timezone.now() - value < timedelta(minutes=1):
        return _time_tag(value, "just now")
    return _time_tag(value, f"{timesince(value)} ago")


@register.filter
def until(value: Any) -> SafeString | str:
    """`in 4 minutes`, `in under a minute`, or `now` once passed; the exact time as its title."""
    if not isinstance(value, datetime):
        return "–"
    left = value - timezone.now()
    if left <= timedelta(0):
        return _time_tag(value, "now")
    if left < timedelta(minutes=1):
        return _time_tag(value, "in under a minute")
    return _time_tag(value, f"in {timeuntil(value)}")


SIGNALS = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}


@register.filter
def exit_explained(execution: Any) -> str:
    """Why an execution ended as it did, in words, where its status and exit code alone do not say."""
    code = execution.exit_code
    if execution.status == "timeout":
        return f"timed out after {execution.timeout} s, the process was killed"
    if execution.status == "cancelled":
        return "cancelled, the process was killed" if code is not None else "cancelled before it started"
    if code is not None and code < 0:
        name = SIGNALS.get(-code, f"signal {-code}")
        hint = " (often: out of memory)" if -code == 9 else ""
        return f"killed by {name}{hint}"
    return ""


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


@register.simple_tag(takes_context=True)
def site_url(context: template.Context) -> str:
    """This site's own origin as the browser reached it (`http://host:port`), for copyable snippets."""
    return context["request"].build_absolute_uri("/").rstrip("/")


@register.filter(name="public_text")
def public_text_filter(value: Any) -> str:
    """Runtime text without the server's host paths (see sandbox_site/host_paths.py)."""
    return public_text(str(value or ""))
