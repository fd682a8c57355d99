"""Console pages of sessions (list, create, detail with files) and API keys.

Function views; htmx requests get a template partial. Every workflow goes through sessions_app.services and
sessions_app.files, the functions the REST API calls. Sessions are looked up as the API does
(`SandboxSession.objects.get_visible`), so another owner's session is a 404 exactly like a missing one.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING, HttpResponseClientRedirect, HttpResponseClientRefresh

from runtime import RuntimeFailure
from sandbox_site.downloads import download_response
from sandbox_site.forms import add_serializer_errors
from sandbox_site.views import HtmxHttpRequest, console_login_required
from sessions_app.api.files import MULTIPART_OVERHEAD, LimitedUploadHandler
from sessions_app.api.serializers import SessionCreateSerializer
from sessions_app.files import (
    MAX_UPLOAD_BYTES,
    BadPath,
    clean_path,
    files_delete,
    files_download,
    files_list,
    files_upload,
)
from sessions_app.forms import ApiKeyForm, FileUploadForm, SessionCreateForm
from sessions_app.models import ApiKey, SandboxSession, SessionStatus
from sessions_app.sandboxes import handle_for, runtime_for
from sessions_app.services import (
    SessionError,
    session_keepalive,
    session_open,
    session_terminate,
)
from templates_app.models import SandboxTemplate

PAGE_SIZE = 20
FILE_ERRORS = (
    BadPath,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    SessionError,
    RuntimeFailure,
)


def stop_polling_unless(watching: bool, response: HttpResponse) -> HttpResponse:
    """htmx stops a poll on HTTP 286; the fragment rendered without its trigger keeps it stopped."""
    if not watching:
        response.status_code = HTMX_STOP_POLLING
    return response


def describe_error(exc: Exception) -> str:
    if isinstance(exc, SessionError | RuntimeFailure):
        return exc.message
    if isinstance(exc, FileNotFoundError):
        return "No such file or directory in the workspace."
    if isinstance(exc, IsADirectoryError):
        return "That path is a directory."
    if isinstance(exc, NotADirectoryError):
        return "That path is not a directory."
    return str(exc)


# --- list ---------------------------------------------------------------------------------------------


def filtered_sessions(request: HtmxHttpRequest) -> tuple[Any, dict[str, str]]:
    """The list's filters as the user gave them, and the sessions they select (the API's list filters by the
    same `matching`). A search "key=value" matches a metadata value exactly, as the API's metadata.<key> does.
    """
    filters = {name: request.GET.get(name, "").strip() for name in ("status", "template", "q")}
    if filters["status"] not in SessionStatus.values:
        filters["status"] = ""
    key, separator, value = filters["q"].partition("=")
    metadata = [(key.strip(), value.strip())] if separator and key.strip() else []
    sessions = (
        SandboxSession.objects.visible_to(request.user)
        .select_related("template", "owner")
        .matching(
            status=filters["status"],
            template_id=filters["template"],
            metadata=metadata,
            search="" if metadata else filters["q"],
        )
    )
    return sessions, filters


@require_GET
@console_login_required
def session_list(request: HtmxHttpRequest) -> HttpResponse:
    """Sessions the user may see, filtered and paginated; the table polls while a session on it is live."""
    sessions, filters = filtered_sessions(request)
    page = Paginator(sessions, PAGE_SIZE).get_page(request.GET.get("page"))
    watching = any(session.is_live for session in page.object_list)
    context = {
        "page": page,
        "filters": filters,
        "statuses": SessionStatus.values,
        "templates": SandboxTemplate.objects.order_by("id").values_list("id", flat=True),
        "watching": watching,
    }
    if request.htmx:
        return stop_polling_unless(watching, render(request, "sessions_app/session_list.html#table", context))
    return render(request, "sessions_app/session_list.html", context)


# --- create -------------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@console_login_required
def session_create_view(request: HtmxHttpRequest) -> HttpResponse:
    """Create a session from the form; the API serializer validates, as it does for agents."""
    form = SessionCreateForm(request.POST or None, initial={"template_id": request.GET.get("template")})
    if request.method == "POST" and form.is_valid():
        serializer = SessionCreateSerializer(data=form.api_data())
        if not serializer.is_valid():
            add_serializer_errors(form, serializer.errors)
        else:
            session = start_session(request, form, serializer.validated_data)
            if session is not None:
                url = reverse("sessions:detail", args=[session.id])
                return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    template = "sessions_app/session_form.html"
    status = 400 if request.method == "POST" and not request.htmx else 200
    if request.htmx:
        template += "#form"
    return render(request, template, {"form": form, "templates": form.templates}, status=status)


def start_session(
    request: HtmxHttpRequest, form: SessionCreateForm, data: dict[str, Any]
) -> SandboxSession | None:
    template = form.templates.get(data["template_id"])
    if template is None:
        form.add_error("template_id", "That template is not available.")
        return None
    try:
        # The API's create, with its wait (SANDBOX_CREATE_WAIT): most users skip the `creating` page; a slower
        # start shows it, and the page polls until the session runs or fails.
        session = session_open(
            owner=request.user, template=template, **SessionCreateSerializer.service_arguments(data)
        )
    except SessionError as exc:
        form.add_error(None, exc.message)
        return None
    if session.status == SessionStatus.FAILED:
        messages.error(request, f"The sandbox could not be created: {session.status_detail}")
    return session


# --- detail -------------------------------------------------------------------------------------------


def sandbox_usage(session: SandboxSession) -> dict[str, Any] | None:
    """What the runtime sees of a running session's sandbox now; None when it cannot say."""
    handle = handle_for(session)
    if session.status != SessionStatus.RUNNING or handle is None:
        return None
    try:
        state = runtime_for(session).inspect(handle)
    except Exception:  # a status panel must render even when the backend is down
        return {"error": "the runtime did not answer"}
    return {
        "running": state.running,
        "detail": state.detail,
        "memory_mb": state.memory_mb,
        "cpu_percent": state.cpu_percent,
    }


def files_context(session: SandboxSession, path: str) -> dict[str, Any]:
    # An ended session's files are the copy saved to storage when it ended: listed and downloadable, not
    # writable.
    stored = session.status not in (SessionStatus.CREATING, SessionStatus.RUNNING)
    context: dict[str, Any] = {
        "path": "",
        "parent": None,
        "files": [],
        "files_error": "",
        "crumbs": [],
        "stored": stored,
    }
    if session.status == SessionStatus.CREATING:
        context["files_error"] = "The sandbox is being built; its files appear when it runs."
        return context
    try:
        context["path"] = clean_path(path, allow_empty=True)
        entries = files_list(session=session, path=context["path"])
    except FILE_ERRORS as exc:
        context["files_error"] = describe_error(exc)
        return context
    context["files"] = sorted(entries, key=lambda entry: (not entry["is_dir"], entry["name"] or ""))
    if context["path"]:
        context["parent"] = posixpath.dirname(context["path"])
    context["crumbs"] = crumbs(context["path"])
    return context


def crumbs(path: str) -> list[tuple[str, str]]:
    parts = [part for part in path.split("/") if part]
    return [(part, "/".join(parts[: index + 1])) for index, part in enumerate(parts)]


SPARK_WIDTH = 240
SPARK_HEIGHT = 40


@dataclass(frozen=True)
class Sparkline:
    """One usage series as an inline SVG polyline: no chart library, drawn on the server."""

    points: str
    latest: float
    peak: float
    top: float
    count: int
    first_at: datetime
    last_at: datetime


def sparkline(samples: list[tuple[datetime, float]], *, top: float) -> Sparkline | None:
    """Polyline points for (time, value) samples over SPARK_WIDTH x SPARK_HEIGHT, scaled to `top` (the
    limit) or the peak if that is higher; x by time, so a gap between probes shows as a longer segment."""
    if not samples:
        return None
    values = [value for _, value in samples]
    peak = max(values)
    ceiling = max(top, peak) or 1.0
    start, end = samples[0][0], samples[-1][0]
    span = (end - start).total_seconds() or 1.0
    points = []
    for at, value in samples:
        x = SPARK_WIDTH * (at - start).total_seconds() / span
        y = SPARK_HEIGHT - SPARK_HEIGHT * value / ceiling
        points.append(f"{x:.1f},{y:.1f}")
    if len(points) == 1:
        # One reading: a level line across the whole width.
        level = points[0].split(",")[1]
        points = [f"0.0,{level}", f"{SPARK_WIDTH:.1f},{level}"]
    return Sparkline(" ".join(points), values[-1], peak, ceiling, len(samples), start, end)


def usage_history(session: SandboxSession) -> dict[str, Sparkline | None]:
    """CPU (% of one core) and memory (MiB) over the samples the health probe kept for this session."""
    rows = list(session.usage_samples.order_by("at", "id").values_list("at", "cpu_percent", "memory_mb"))
    cpu = [(at, value) for at, value, _ in rows if value is not None]
    memory = [(at, value) for at, _, value in rows if value is not None]
    return {
        "cpu": sparkline(cpu, top=100.0 * float(session.cpu or 1)),
        "memory": sparkline(memory, top=float(session.memory_mb)),
    }


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    what: str
    detail: str = ""
    status: str = ""
    url: str = ""


TIMELINE_EXECUTIONS = 50


def session_timeline(session: SandboxSession) -> tuple[list[TimelineEvent], int]:
    """What happened to the session when, oldest first, from the timestamps its row and its executions
    already keep; the newest TIMELINE_EXECUTIONS executions, and how many earlier ones are left out."""
    events = [TimelineEvent(session.created_at, "created", f"from template {session.template_id}")]
    if session.running_at:
        where = f"on {session.runtime_node}" if session.runtime_node else ""
        events.append(TimelineEvent(session.running_at, "sandbox ready", where, status="running"))
    if session.dependency_install_started_at:
        names = ", ".join(dep.get("name", "") for dep in session.requested_dependencies)
        events.append(
            TimelineEvent(session.dependency_install_started_at, "dependency install started", names)
        )
    if session.dependency_install_finished_at:
        events.append(
            TimelineEvent(
                session.dependency_install_finished_at,
                "dependency install ended",
                status=session.dependency_install_status,
            )
        )
    # Through the reverse relation: sessions_app never imports executions_app (dependency direction).
    executions = session.executions.order_by("-created_at", "-id")  # type: ignore[attr-defined]
    shown = list(executions[:TIMELINE_EXECUTIONS])
    for execution in shown:
        duration = (execution.metrics or {}).get("duration_ms")
        detail = execution.language + (f", {duration:.0f} ms" if duration is not None else "")
        events.append(
            TimelineEvent(
                execution.created_at,
                f"execution {execution.id}",
                detail,
                status=execution.status,
                url=reverse("executions:detail", args=[execution.id]),
            )
        )
    if session.completed_at:
        reason = session.termination_reason.replace("_", " ")
        events.append(TimelineEvent(session.completed_at, "ended", reason, status=session.status))
    events.sort(key=lambda event: event.at)
    earlier = executions.count() - len(shown) if len(shown) == TIMELINE_EXECUTIONS else 0
    return events, earlier


def status_context(session: SandboxSession) -> dict[str, Any]:
    return {
        "session": session,
        "usage": sandbox_usage(session),
        "history": usage_history(session),
        "spark_width": SPARK_WIDTH,
        "spark_height": SPARK_HEIGHT,
        "poll_seconds": 1 if session.status == SessionStatus.CREATING else 5,
    }


@require_GET
@console_login_required
def session_detail(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    """Status, resources, env, dependencies, files; executions load from executions_app into the page."""
    session = SandboxSession.objects.get_visible(request.user, session_id)
    timeline, earlier = session_timeline(session)
    context = {
        **status_context(session),
        "timeline": timeline,
        "timeline_earlier": earlier,
        **files_context(session, request.GET.get("path", "")),
        "upload_form": FileUploadForm(),
        "max_upload": MAX_UPLOAD_BYTES,
    }
    return render(request, "sessions_app/session_detail.html", context)


@require_GET
@console_login_required
def session_status(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    """The status panel, polled: a changed status reloads the page (its sections depend on it); 286 once the
    session has ended."""
    session = SandboxSession.objects.get_visible(request.user, session_id)
    if not request.htmx:
        return redirect("sessions:detail", session.id)
    # The page's other sections depend on these: a change of either reloads it (a finished dependency
    # install must not stay "installing" until someone reloads by hand).
    shown = request.GET.get("shown")
    deps = request.GET.get("deps")
    if (shown and shown != session.status) or (deps and deps != session.dependency_install_status):
        return HttpResponseClientRefresh()
    response = render(request, "sessions_app/session_detail.html#status", status_context(session))
    return stop_polling_unless(session.is_live, response)


@require_POST
@console_login_required
def session_terminate_view(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    session = session_terminate(
        session=SandboxSession.objects.get_visible(request.user, session_id), reason="user_request"
    )
    messages.success(request, f"Session {session.client_id} is {session.status}.")
    if request.htmx:
        return HttpResponseClientRefresh()
    return redirect("sessions:detail", session.id)


@require_POST
@console_login_required
def session_bulk_terminate(request: HtmxHttpRequest) -> HttpResponse:
    """Terminate the ticked sessions of the list, each through session_terminate as one at a time would.

    Only the user's visible, live sessions among the ids count: another owner's id is ignored like a missing
    one, an ended session is left as it is."""
    ids = request.POST.getlist("session")[: PAGE_SIZE * 5]
    chosen = (
        SandboxSession.objects.visible_to(request.user).live().filter(pk__in=ids).select_related("template")
    )
    ended = [session_terminate(session=session, reason="user_request") for session in chosen]
    if ended:
        names = ", ".join(session.client_id for session in ended)
        messages.success(
            request, f"Terminated {len(ended)} session{'s' if len(ended) != 1 else ''}: {names}."
        )
    else:
        messages.info(request, "No live session was selected.")
    back = request.POST.get("next", "")
    url = back if back.startswith("/sessions/") else reverse("sessions:list")
    return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)


@require_POST
@console_login_required
def session_keepalive_view(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    session = SandboxSession.objects.get_visible(request.user, session_id)
    try:
        session = session_keepalive(session=session)
        note = "Idle clock reset."
    except SessionError as exc:
        note = exc.message
    if request.htmx:
        context = {**status_context(session), "note": note}
        return render(request, "sessions_app/session_detail.html#status", context)
    messages.info(request, note)
    return redirect("sessions:detail", session.id)


# --- files --------------------------------------------------------------------------------------------


def files_response(
    request: HtmxHttpRequest, session: SandboxSession, path: str, note: str = "", error: str = ""
) -> HttpResponse:
    if not request.htmx:
        if note:
            messages.success(request, note)
        if error:
            messages.error(request, error)
        url = reverse("sessions:detail", args=[session.id])
        return HttpResponseRedirect(f"{url}?{urlencode({'path': path})}#files" if path else f"{url}#files")
    context = {
        "session": session,
        **files_context(session, path),
        "upload_form": FileUploadForm(),
        "max_upload": MAX_UPLOAD_BYTES,
        "note": note,
        "error": error,
    }
    return render(request, "sessions_app/session_detail.html#files", context)


@require_GET
@console_login_required
def session_files(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    session = SandboxSession.objects.get_visible(request.user, session_id)
    return files_response(request, session, request.GET.get("path", ""))


@csrf_exempt
@require_POST
@console_login_required
def file_upload(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    """Upload into the shown directory. Spooled to a temporary file and stopped at the size limit (the CSRF
    check runs after the upload handlers are set, as Django requires for custom handlers)."""
    request.upload_handlers = [LimitedUploadHandler(request)]
    return _file_upload(request, session_id)


@csrf_protect
def _file_upload(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    session = SandboxSession.objects.get_visible(request.user, session_id)
    directory = request.POST.get("directory", "")
    length = request.META.get("CONTENT_LENGTH") or "0"
    limit = f"Files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB."
    if length.isdigit() and int(length) > MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD:
        return files_response(request, session, directory, error=limit)
    form = FileUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return files_response(
            request, session, directory, error=limit if request.FILES else "Choose a file to upload."
        )
    upload = form.cleaned_data["file"]
    target = posixpath.join(directory, posixpath.basename(upload.name or "upload"))
    try:
        result = files_upload(session=session, path=target, fileobj=upload.file, size=upload.size or 0)
    except FILE_ERRORS as exc:
        return files_response(request, session, directory, error=describe_error(exc))
    finally:
        upload.close()
    return files_response(
        request, session, directory, note=f"Uploaded {result['file_path']} ({result['size']} bytes)."
    )


@require_GET
@console_login_required
def file_download(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    session = SandboxSession.objects.get_visible(request.user, session_id)
    path = request.GET.get("path", "")
    try:
        chunks = files_download(session=session, path=path)
        first = next(chunks, b"")
    except FileNotFoundError:
        raise Http404("no such file in the workspace") from None
    except FILE_ERRORS as exc:
        messages.error(request, describe_error(exc))
        return redirect("sessions:detail", session.id)

    return download_response(request, first, chunks, path)


@require_POST
@console_login_required
def file_delete(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    session = SandboxSession.objects.get_visible(request.user, session_id)
    path = request.POST.get("path", "")
    directory = posixpath.dirname(path)
    try:
        files_delete(session=session, path=path)
    except FILE_ERRORS as exc:
        return files_response(request, session, directory, error=describe_error(exc))
    return files_response(request, session, directory, note=f"Deleted {path}.")


# --- API keys -----------------------------------------------------------------------------------------


def visible_keys(request: HtmxHttpRequest) -> Any:
    keys = ApiKey.objects.select_related("owner").order_by("revoked_at", "-created_at")
    return keys if request.user.is_staff else keys.filter(owner=request.user)


@require_http_methods(["GET", "POST"])
@console_login_required
def api_keys(request: HtmxHttpRequest) -> HttpResponse:
    """The user's keys (staff: everyone's); creating one shows its secret once, in this response only."""
    form = ApiKeyForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        key, raw = ApiKey.objects.create_key(owner=request.user, name=form.cleaned_data["name"])
        new_key = {"key": key, "raw": raw}
        form = ApiKeyForm()
    context = {"form": form, "keys": visible_keys(request), "new_key": new_key}
    template = "sessions_app/api_keys.html#keys" if request.htmx else "sessions_app/api_keys.html"
    response = render(request, template, context)
    # The secret must not outlive this response in any cache.
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@console_login_required
def api_key_revoke(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(visible_keys(request), pk=key_id)
    key.revoke()
    if request.htmx:
        context = {"form": ApiKeyForm(), "keys": visible_keys(request), "revoked": key}
        return render(request, "sessions_app/api_keys.html#keys", context)
    messages.success(request, f"Revoked {key}.")
    return redirect("sessions:api-keys")
