"""Console plumbing shared by every app (login guard, htmx request type) and the dashboard page."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from executions_app.models import Execution, ExecutionStatus
from sessions_app.models import SandboxSession, SessionStatus, WarmSandbox
from templates_app.models import SandboxTemplate


class HtmxHttpRequest(HttpRequest):
    """What console views receive: HtmxMiddleware adds `htmx` (falsy unless the request came from htmx)."""

    htmx: HtmxDetails


ConsoleView = Callable[..., HttpResponse]


def console_login_required(view: ConsoleView) -> ConsoleView:
    """Like login_required, with the console's login page; an htmx fragment request gets HX-Redirect,
    so an expired login reloads the whole page at the login form instead of swapping it into a fragment."""

    @functools.wraps(view)
    def wrapped(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        login_url = resolve_url("login")
        if request.htmx:
            page = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(f"{login_url}?next={page}")
        return redirect_to_login(request.get_full_path(), login_url)

    return wrapped


FAILED_EXECUTION_STATUSES = (ExecutionStatus.FAILED, ExecutionStatus.CRASHED, ExecutionStatus.TIMEOUT)
CHART_MINUTES = 60
CHART_WIDTH = 600
CHART_HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    minute: datetime


def executions_per_minute(executions: Any, now: datetime) -> list[tuple[datetime, int]]:
    """(minute, count) for each of the last CHART_MINUTES minutes, oldest first, the current minute last."""
    current = now.replace(second=0, microsecond=0)
    start = current - timedelta(minutes=CHART_MINUTES - 1)
    rows = (
        executions.filter(created_at__gte=start)
        .annotate(minute=TruncMinute("created_at"))
        .order_by()
        .values("minute")
        .annotate(count=Count("id"))
    )
    # Aware datetimes compare (and hash) by instant, so the database's minutes match ours.
    counts = {row["minute"]: row["count"] for row in rows}
    return [
        (minute, counts.get(minute, 0))
        for minute in (start + timedelta(minutes=offset) for offset in range(CHART_MINUTES))
    ]


def chart_bars(series: list[tuple[datetime, int]]) -> tuple[list[Bar], int]:
    """SVG geometry for the series: bars scaled to the busiest minute (at least 1, so zero stays flat)."""
    peak = max([count for _, count in series] + [1])
    slot = CHART_WIDTH / len(series)
    bars = []
    for index, (minute, count) in enumerate(series):
        height = CHART_HEIGHT * count / peak
        bars.append(
            Bar(
                x=round(index * slot + 1, 2),
                y=round(CHART_HEIGHT - height, 2),
                width=round(slot - 2, 2),
                height=round(height, 2),
                count=count,
                minute=minute,
            )
        )
    return bars, peak


def warm_ready_counts() -> dict[str, int]:
    """Ready warm sandboxes per template id."""
    rows = WarmSandbox.objects.ready().order_by().values("template_id").annotate(count=Count("pk"))
    return {row["template_id"]: row["count"] for row in rows}


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    sessions = SandboxSession.objects.visible_to(request.user)
    executions = Execution.objects.visible_to(request.user)
    counts = dict(sessions.order_by().values_list("status").annotate(count=Count("id")))
    by_status = [(status, counts.get(status, 0)) for status in SessionStatus.values]
    ready = warm_ready_counts()
    pools = [
        {
            "template": template,
            "size": template.warm_pool_size,
            "ready": None if ready is None else ready.get(template.id, 0),
        }
        for template in SandboxTemplate.objects.active().order_by("id")
    ]
    failures: list[dict[str, Any]] = [
        {
            "kind": "execution",
            "id": execution.id,
            "url": reverse("executions:detail", args=[execution.id]),
            "status": execution.status,
            "when": execution.completed_at or execution.created_at,
            "detail": execution.error_message,
        }
        for execution in executions.filter(status__in=FAILED_EXECUTION_STATUSES).order_by("-created_at")[:8]
    ]
    failures += [
        {
            "kind": "session",
            "id": session.client_id,
            "url": reverse("sessions:detail", args=[session.id]),
            "status": session.status,
            "when": session.completed_at or session.created_at,
            "detail": session.status_detail or session.termination_reason,
        }
        for session in sessions.filter(status=SessionStatus.FAILED).order_by("-created_at")[:8]
    ]
    failures.sort(key=lambda failure: failure["when"], reverse=True)
    series = executions_per_minute(executions, now)
    bars, peak = chart_bars(series)
    return {
        "by_status": by_status,
        "live_sessions": counts.get(SessionStatus.RUNNING, 0) + counts.get(SessionStatus.CREATING, 0),
        "running_executions": list(
            executions.unfinished().select_related("session").order_by("-created_at")[:10]
        ),
        "pools": pools,
        "failures": failures[:10],
        "bars": bars,
        "peak": peak,
        "executions_last_hour": sum(count for _, count in series),
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "generated_at": now,
    }


@console_login_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    """Overview of what the user may see; the body re-renders itself every few seconds through htmx."""
    template = "sandbox_site/dashboard.html"
    if request.htmx:
        template += "#body"
    return render(request, template, dashboard_context(request))
