"""Coloured status badges, shared by the admin and the console.

The colours are classes in static/css/badges.css (linked by the console's base.html and the admin's
base_site.html), not a style attribute: the Content-Security-Policy refuses inline styles.
"""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.safestring import SafeString


def status_badge(status: str) -> SafeString:
    return format_html('<span class="status-badge status-{}">{}</span>', status, status)
