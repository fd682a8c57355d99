"""Coloured status badges, shared by the admin and the console."""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.safestring import SafeString

STATUS_COLOURS = {
    "creating": "#6b7280",
    "pending": "#6b7280",
    "installing": "#6b7280",
    "running": "#2563eb",
    "completed": "#15803d",
    "failed": "#b91c1c",
    "crashed": "#b91c1c",
    "timeout": "#b45309",
    "terminated": "#374151",
    "cancelled": "#374151",
}


def status_badge(status: str) -> SafeString:
    colour = STATUS_COLOURS.get(status, "#374151")
    return format_html(
        '<span class="status-badge status-{}" style="background:{};color:#fff;padding:1px 8px;'
        'border-radius:9px;font-size:11px;font-weight:600">{}</span>',
        status,
        colour,
        status,
    )
