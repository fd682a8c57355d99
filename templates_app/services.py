"""Template workflows."""

from __future__ import annotations

from templates_app.models import SandboxTemplate


class TemplateInUse(Exception):
    """A template that sessions still reference cannot be deleted."""


def template_delete(*, template: SandboxTemplate) -> None:
    """Delete a template no session references. Live sessions, and ended ones kept for their history, both
    block it; deactivating (`is_active=false`) is the way to retire a template that has a history."""
    live = template.sessions.filter(status__in=("creating", "running")).count()
    if live:
        raise TemplateInUse(f"{live} live session(s) use template {template.id!r}; end them first")
    ended = template.sessions.count()
    if ended:
        raise TemplateInUse(
            f"{ended} ended session(s) still reference template {template.id!r}; "
            "delete them, or deactivate the template with is_active=false"
        )
    template.delete()
