"""Console pages of executions: a session's code runner and history, execution detail, result fragments.

Submitting goes through execution_start and lookups through `get_visible`, as in the REST API; output
reaches the browser over the websocket (executions_app/consumers.py), and these views render what is stored.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING, reswap, retarget, trigger_client_event

from executions_app.api.serializers import ExecuteSerializer
from executions_app.forms import EXAMPLE_CODE, ExecuteForm
from executions_app.models import Execution, ExecutionOutputChunk, ExecutionStatus, Language
from executions_app.services import ExecutionError, execution_cancel, execution_start
from sandbox_site.forms import add_serializer_errors
from sandbox_site.views import HtmxHttpRequest, console_login_required
from sessions_app.models import SandboxSession

HISTORY_PAGE = 15
LIST_PAGE = 20


def pane_context(execution: Execution) -> dict[str, Any]:
    """What an output pane needs: the output stored so far, and the seq the websocket resumes after."""
    chunks = list(
        ExecutionOutputChunk.objects.filter(execution=execution).order_by("seq").only("seq", "stream", "data")
    )
    return {
        "execution": execution,
        "chunks": chunks,
        "last_seq": chunks[-1].seq if chunks else 0,
        # Executions recorded without chunks (none stream) still show their kept output.
        "fallback_output": not chunks and execution.is_finished,
    }


def runner_form(data: Any = None) -> ExecuteForm:
    return ExecuteForm(data, initial={"code": EXAMPLE_CODE, "event": '{"name": "console"}'})


def history_context(request: HtmxHttpRequest, session: SandboxSession) -> dict[str, Any]:
    executions = Execution.objects.filter(session=session).order_by("-created_at", "-id")
    page = Paginator(executions, HISTORY_PAGE).get_page(request.GET.get("page"))
    counts = dict(executions.order_by().values_list("status").annotate(count=Count("id")))
    return {
        "session": session,
        "page": page,
        "counts": sorted(counts.items()),
        "total": sum(counts.values()),
        "watching": any(not execution.is_finished for execution in page.object_list),
    }


@require_GET
@console_login_required
def execution_list(request: HtmxHttpRequest) -> HttpResponse:
    """Executions across every session the user may see, newest first, filtered by status and language.

    Visibility is `Execution.objects.visible_to`, as in the API; the table polls while an execution on it is
    unfinished and stops with 286 once none is.
    """
    filters = {name: request.GET.get(name, "").strip() for name in ("status", "language")}
    executions = Execution.objects.visible_to(request.user).select_related("session", "session__owner")
    if filters["status"] in ExecutionStatus.values:
        executions = executions.filter(status=filters["status"])
    else:
        filters["status"] = ""
    if filters["language"] in Language.values:
        executions = executions.filter(language=filters["language"])
    else:
        filters["language"] = ""
    page = Paginator(executions.order_by("-created_at", "-id"), LIST_PAGE).get_page(request.GET.get("page"))
    watching = any(not execution.is_finished for execution in page.object_list)
    context = {
        "page": page,
        "filters": filters,
        "statuses": ExecutionStatus.values,
        "languages": Language.values,
        "watching": watching,
    }
    if request.htmx:
        response = render(request, "executions_app/execution_list.html#table", context)
        if not watching:
            response.status_code = HTMX_STOP_POLLING
        return response
    return render(request, "executions_app/execution_list.html", context)


@require_GET
@console_login_required
def session_executions(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    """The code runner and execution history of one session: loaded into the session page by htmx, or a page
    of its own without JavaScript. The history fragment polls while an execution on it is unfinished."""
    session = SandboxSession.objects.get_visible(request.user, session_id)
    context = {**history_context(request, session), "form": runner_form()}
    if request.htmx and request.htmx.target == "execution-history":
        response = render(request, "executions_app/session_executions.html#history", context)
        if not context["watching"]:
            response.status_code = HTMX_STOP_POLLING
        return response
    if request.htmx:
        return render(request, "executions_app/session_executions.html#panel", context)
    return render(request, "executions_app/session_executions.html", context)


@require_POST
@console_login_required
def execution_create(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    """Submit code from the runner. htmx gets the live output pane; a plain post goes to the execution page."""
    session = SandboxSession.objects.get_visible(request.user, session_id)
    form = runner_form(request.POST)
    execution = None
    if form.is_valid():
        serializer = ExecuteSerializer(data=form.api_data())
        if serializer.is_valid():
            try:
                execution = execution_start(session=session, **serializer.validated_data)
            except ExecutionError as exc:
                form.add_error(None, exc.message)
        else:
            add_serializer_errors(form, serializer.errors)
    if execution is None:
        context = {**history_context(request, session), "form": form}
        if request.htmx:
            response = render(request, "executions_app/session_executions.html#runner", context)
            return reswap(retarget(response, "#runner"), "outerHTML")
        return render(request, "executions_app/session_executions.html", context, status=400)
    if not request.htmx:
        return redirect("executions:detail", execution.id)
    response = render(request, "executions_app/_pane.html#pane", pane_context(execution))
    return trigger_client_event(response, "executions-changed", after="swap")


@require_GET
@console_login_required
def execution_detail(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    """Code, event, output (stored, then live while it runs), result, metrics and changed files."""
    execution = Execution.objects.get_visible(request.user, execution_id)
    return render(request, "executions_app/execution_detail.html", pane_context(execution))


@require_GET
@console_login_required
def execution_result(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    """The result block, polled (and fetched when the websocket reports the end); 286 once finished."""
    execution = Execution.objects.get_visible(request.user, execution_id)
    if not request.htmx:
        return redirect("executions:detail", execution.id)
    response = render(request, "executions_app/_pane.html#result", {"execution": execution})
    if execution.is_finished:
        response.status_code = HTMX_STOP_POLLING
    return response


@require_POST
@console_login_required
def execution_cancel_view(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    execution = execution_cancel(execution=Execution.objects.get_visible(request.user, execution_id))
    execution.refresh_from_db()
    if request.htmx:
        return render(
            request, "executions_app/_pane.html#result", {"execution": execution, "note": "Cancel requested."}
        )
    return redirect("executions:detail", execution.id)
