"""Console plumbing shared by every app (login guard, htmx request type) and the dashboard page."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db.models import Count, Sum
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import render, resolve_url
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.views import defaults
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from executions_app.models import Execution, ExecutionStatus
from sessions_app.admission import format_mib
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


# The user's own code failed (an exception, a non-zero exit, past its timeout) versus the platform failed
# them (a run killed by a signal, e.g. out of memory or a lost sandbox; a session that could not start or
# was lost): the dashboard lists them apart, as the first is the user's to fix and the second an operator's.
CODE_FAILURE_STATUSES = (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT)
PLATFORM_FAILURE_STATUSES = (ExecutionStatus.CRASHED,)
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


def execution_failure(execution: Execution) -> dict[str, Any]:
    return {
        "kind": "execution",
        "id": execution.id,
        "url": reverse("executions:detail", args=[execution.id]),
        "status": execution.status,
        "when": execution.completed_at or execution.created_at,
        "detail": execution.error_message,
    }


@dataclass(frozen=True)
class Limit:
    name: str
    used: float
    limit: float
    shown_used: str
    shown_limit: str

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.used / self.limit)) if self.limit else 0


def owner_limits(user: Any) -> list[Limit]:
    """The per-owner limits new sessions and executions are admitted against (sessions_app/admission.py,
    executions_app/services.py), with what this user uses of them now. Staff are limited like anyone."""
    live = (
        SandboxSession.objects.filter(owner_id=user.pk).live().aggregate(n=Count("pk"), mb=Sum("memory_mb"))
    )
    in_flight = Execution.objects.unfinished().filter(session__owner_id=user.pk).count()
    memory_used = int(live["mb"] or 0)
    return [
        Limit(
            "Live sessions",
            live["n"],
            settings.SANDBOX_MAX_SESSIONS_PER_KEY,
            str(live["n"]),
            str(settings.SANDBOX_MAX_SESSIONS_PER_KEY),
        ),
        Limit(
            "Memory of live sessions",
            memory_used,
            settings.SANDBOX_MAX_SESSION_MEMORY_PER_OWNER,
            format_mib(memory_used),
            format_mib(settings.SANDBOX_MAX_SESSION_MEMORY_PER_OWNER),
        ),
        Limit(
            "Executions at a time",
            in_flight,
            settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER,
            str(in_flight),
            str(settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER),
        ),
    ]


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
    code_failures = [
        execution_failure(execution)
        for execution in executions.filter(status__in=CODE_FAILURE_STATUSES).order_by("-created_at")[:10]
    ]
    platform_failures = [
        execution_failure(execution)
        for execution in executions.filter(status__in=PLATFORM_FAILURE_STATUSES).order_by("-created_at")[:8]
    ]
    platform_failures += [
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
    platform_failures.sort(key=lambda failure: failure["when"], reverse=True)
    series = executions_per_minute(executions, now)
    bars, peak = chart_bars(series)
    return {
        "by_status": by_status,
        "live_sessions": counts.get(SessionStatus.RUNNING, 0) + counts.get(SessionStatus.CREATING, 0),
        "running_executions": list(
            executions.unfinished().select_related("session").order_by("-created_at")[:10]
        ),
        "pools": pools,
        "code_failures": code_failures,
        "platform_failures": platform_failures[:10],
        "limits": owner_limits(request.user),
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


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page says; the icon is a static SVG."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


# --- error pages ----------------------------------------------------------------------------------------
# Console paths get the console's layout (menu included) for every error; API paths keep the API's JSON
# error shape. Referenced as handler400/403/404/500 in sandbox_site/urls.py.


def _error_page(
    request: HttpRequest, status: int, template: str, code: str, message: str, **context: Any
) -> HttpResponse:
    # Imported here: the API's error module imports DRF, whose settings import views of this package.
    from sandbox_site.api.errors import is_api_path, json_error

    if is_api_path(request):
        return json_error(request, status, code, message)
    return render(request, template, {"message": message, **context}, status=status)


def error_400(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _error_page(request, 400, "400.html", "bad_request", "The request could not be understood.")


def error_403(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _error_page(request, 403, "403.html", "forbidden", "You may not do that.")


def error_404(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _error_page(
        request, 404, "404.html", "not_found", f"no API endpoint at {request.path}", request_path=request.path
    )


def error_500(request: HttpRequest) -> HttpResponse:
    message = "Something went wrong on our side; the request id identifies it."
    try:
        return _error_page(request, 500, "500.html", "internal_error", message)
    except Exception:
        # The layout itself failed (the database is down, say): Django's page renders 500.html without
        # the request, so without anything that could fail again.
        return defaults.server_error(request)
