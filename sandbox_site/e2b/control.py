"""E2B's control API (`E2B_API_URL`): create, list, get, connect, set the timeout of, and kill sandboxes.

A sandbox is one of our sessions; its E2B id is the session's internal id (globally unique, so a sandbox's
access token alone can name it). E2B's `timeout` (seconds the sandbox lives without being extended) is our
idle timeout: `set_timeout` sets it and restarts the idle clock, and every call to the sandbox's services
restarts the clock too, so a sandbox in use is not killed under its user. `endAt` is the current idle deadline.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse

from sandbox_site.e2b.auth import E2BAuthError, access_token, owner_of, session_for_owner
from sandbox_site.e2b.errors import e2b_error
from sandbox_site.e2b.views import e2b_endpoint
from sessions_app.api.serializers import SessionCreateSerializer
from sessions_app.models import LIVE_SESSION_STATUSES, SandboxSession, SessionStatus
from sessions_app.services import (
    SessionError,
    session_keepalive,
    session_open,
    session_terminate,
    session_wait_started,
)
from templates_app.models import SandboxTemplate

# The envd version we answer as: 0.4.0+ sends no username, 0.5.7+ may stream uploads as octet-stream.
ENVD_VERSION = "0.5.7"
# E2B's default template names, onto built-in templates (an existing template of that id or name wins).
TEMPLATE_ALIASES = {
    "base": "python-basic",
    "code-interpreter-v1": "python-basic",
    "code-interpreter": "python-basic",
    "code-interpreter-beta": "python-basic",
}
MIN_TIMEOUT, MAX_TIMEOUT = 10, 86400
# How long a create waits in all for the sandbox to be running (session_open waits SANDBOX_CREATE_WAIT):
# within the SDK's own 60 s request timeout.
CREATE_WAIT_SECONDS = 50
# Our field names in validation errors, as E2B's request names them.
_E2B_FIELD = {"env_vars": "envVars", "template_id": "templateID"}
SESSION_ERROR_STATUS = {"quota_exceeded": 429, "capacity_exhausted": 503, "template_inactive": 400}


class BadRequest(Exception):
    pass


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _timeout(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise BadRequest(f"timeout must be an integer number of seconds from {MIN_TIMEOUT} to {MAX_TIMEOUT}")
    return value


def template_named(name: str) -> SandboxTemplate | None:
    """The active template E2B's `templateID` means: by id, by name, then by E2B's default aliases."""
    active = SandboxTemplate.objects.filter(is_active=True)
    found = active.filter(Q(pk=name) | Q(name__iexact=name)).order_by("pk").first()
    if found is None and name in TEMPLATE_ALIASES:
        found = active.filter(pk=TEMPLATE_ALIASES[name]).first()
    return found


def _created(session: SandboxSession) -> dict[str, Any]:
    token = access_token(session)
    return {
        "templateID": session.template_id,
        "sandboxID": session.pk,
        "clientID": session.client_id,
        "alias": session.template.name,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
        "trafficAccessToken": token,
        "domain": None,
    }


def _listed(session: SandboxSession) -> dict[str, Any]:
    end = session.idle_deadline_at or session.expires_at
    return {
        "templateID": session.template_id,
        "sandboxID": session.pk,
        "clientID": session.client_id,
        "alias": session.template.name,
        "startedAt": session.created_at.isoformat(),
        "endAt": end.isoformat() if end else session.created_at.isoformat(),
        "cpuCount": max(1, round(float(session.cpu))),
        "memoryMB": session.memory_mb,
        "diskSizeMB": session.disk_mb,
        "state": "running",
        "envdVersion": ENVD_VERSION,
        "metadata": session.metadata or {},
    }


def _live_session(owner: Any, sandbox_id: str) -> SandboxSession:
    session = session_for_owner(owner, sandbox_id)
    if session.status not in LIVE_SESSION_STATUSES:
        raise E2BAuthError(404, f"sandbox {sandbox_id!r} not found")
    return session


@e2b_endpoint(["POST", "GET"])
def sandboxes(request: HttpRequest) -> HttpResponse:
    """`POST /sandboxes` and `/v2/sandboxes` create; `GET` lists (v1: everything, v2: paginated)."""
    owner = owner_of(request.META)
    if request.method == "GET":
        return _list(request, owner)
    try:
        body = _json_body(request)
    except BadRequest as exc:
        return e2b_error(400, str(exc))
    template_id = body.get("templateID")
    if not isinstance(template_id, str) or not template_id:
        return e2b_error(400, "templateID is required")
    template = template_named(template_id)
    if template is None:
        return e2b_error(404, f"template {template_id!r} not found", code="template_not_found")
    # Validated exactly as `POST /api/v1/sessions` validates (timeout bounds, environment, metadata keys).
    fields = {
        "template_id": template.pk,
        "env_vars": body.get("envVars") or {},
        "metadata": body.get("metadata") or {},
    }
    if body.get("timeout") is not None:
        fields["timeout"] = body["timeout"]
    serializer = SessionCreateSerializer(data=fields)
    if not serializer.is_valid():
        detail = {_E2B_FIELD.get(k, k): v for k, v in serializer.errors.items()}
        message = "; ".join(f"{name}: {' '.join(map(str, errors))}" for name, errors in detail.items())
        return e2b_error(400, message, code="validation_error", detail=detail)
    try:
        session = session_open(
            owner=owner,
            template=template,
            **SessionCreateSerializer.service_arguments(serializer.validated_data),
        )
    except SessionError as exc:
        return e2b_error(SESSION_ERROR_STATUS.get(exc.code, 400), exc.message, code=exc.code)
    if session.status == SessionStatus.CREATING:
        # E2B answers with a sandbox that is up: wait longer than our own API does before giving it back.
        session = session_wait_started(
            session=session, timeout=max(0, CREATE_WAIT_SECONDS - settings.SANDBOX_CREATE_WAIT)
        )
    if session.status == SessionStatus.CREATING:
        # The SDK stops waiting after 60 s: nobody would ever learn this sandbox's id, so it must not live on.
        session_terminate(session=session, reason="create_wait_expired")
        return e2b_error(
            503, f"the sandbox did not start within {CREATE_WAIT_SECONDS} s", code="runtime_unavailable"
        )
    if session.status != SessionStatus.RUNNING:
        detail = session.status_detail or session.status
        return e2b_error(503, f"the sandbox could not be started: {detail}", code="runtime_unavailable")
    return JsonResponse(_created(session), status=201)


def _list(request: HttpRequest, owner: Any) -> HttpResponse:
    sessions = SandboxSession.objects.visible_to(owner).live().select_related("template")
    raw_metadata = request.GET.get("metadata", "")
    if raw_metadata:
        sessions = sessions.matching(metadata=parse_qsl(raw_metadata))
    states = {s for s in request.GET.get("state", "").split(",") if s}
    if states and "running" not in states:
        sessions = sessions.none()  # nothing here is ever paused
    if request.GET.get("template"):
        template = template_named(request.GET["template"])
        sessions = sessions.filter(template=template) if template else sessions.none()
    ascending = request.GET.get("order") == "asc"
    sessions = sessions.order_by(*(("created_at", "id") if ascending else ("-created_at", "-id")))
    if not request.path.startswith("/e2b/v2/"):
        return JsonResponse([_listed(s) for s in sessions[:1000]], safe=False)
    raw_limit, raw_offset = request.GET.get("limit", "100"), request.GET.get("nextToken", "0")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000 or not raw_offset.isdigit():
        return e2b_error(400, "limit must be 1 to 1000 and nextToken one we returned")
    limit, offset = int(raw_limit), int(raw_offset)
    page = list(sessions[offset : offset + limit + 1])
    response = JsonResponse([_listed(s) for s in page[:limit]], safe=False)
    if len(page) > limit:
        response["X-Next-Token"] = str(offset + limit)
    return response


@e2b_endpoint(["GET", "DELETE"])
def sandbox(request: HttpRequest, sandbox_id: str) -> HttpResponse:
    """`GET /sandboxes/{id}` (detail) and `DELETE` (kill: the session is terminated, its files kept)."""
    owner = owner_of(request.META)
    session = _live_session(owner, sandbox_id)
    if request.method == "DELETE":
        session_terminate(session=session)
        return HttpResponse(status=204)
    token = access_token(session)
    detail = {**_listed(session), "envdAccessToken": token, "domain": None}
    return JsonResponse(detail)


@e2b_endpoint(["POST"])
def set_timeout(request: HttpRequest, sandbox_id: str) -> HttpResponse:
    """`POST /sandboxes/{id}/timeout {timeout}`: the sandbox now lives `timeout` seconds from now."""
    owner = owner_of(request.META)
    session = _live_session(owner, sandbox_id)
    try:
        timeout = _timeout(_json_body(request).get("timeout"))
    except BadRequest as exc:
        return e2b_error(400, str(exc))
    if timeout is None:
        return e2b_error(400, "timeout is required")
    _keep_alive(session, timeout=timeout)
    return HttpResponse(status=204)


@e2b_endpoint(["POST"])
def refresh(request: HttpRequest, sandbox_id: str) -> HttpResponse:
    """`POST /sandboxes/{id}/refreshes {duration?}`: keep alive (for `duration` seconds, if given)."""
    owner = owner_of(request.META)
    session = _live_session(owner, sandbox_id)
    try:
        duration = _timeout(_json_body(request).get("duration"))
    except BadRequest as exc:
        return e2b_error(400, str(exc))
    _keep_alive(session, timeout=duration)
    return HttpResponse(status=204)


@e2b_endpoint(["POST"])
def connect(request: HttpRequest, sandbox_id: str) -> HttpResponse:
    """`POST /sandboxes/{id}/connect` and the v2 path: the running sandbox and its tokens; a longer `timeout`
    than the current one extends it (a shorter one is ignored, as E2B does for running sandboxes)."""
    owner = owner_of(request.META)
    session = _live_session(owner, sandbox_id)
    try:
        timeout = _timeout(_json_body(request).get("timeout"))
    except BadRequest as exc:
        return e2b_error(400, str(exc))
    if session.status == SessionStatus.CREATING:
        session = session_wait_started(session=session, timeout=CREATE_WAIT_SECONDS)
    if session.status != SessionStatus.RUNNING:
        return e2b_error(404, f"sandbox {sandbox_id!r} not found")
    _keep_alive(session, timeout=timeout if timeout and timeout > session.timeout else None)
    return JsonResponse(_created(session), status=200)


def _keep_alive(session: SandboxSession, *, timeout: int | None) -> None:
    """Restart the idle clock, with a new idle timeout when one is given."""
    if timeout is not None and timeout != session.timeout:
        SandboxSession.objects.filter(pk=session.pk).update(timeout=timeout)
        session.timeout = timeout
    try:
        session_keepalive(session=session)
    except SessionError:
        pass  # still creating: its clock starts when it runs


UNSUPPORTED = {
    "pause": "pausing sandboxes is not supported by this server; kill it and create a new one instead",
    "resume": "pausing and resuming sandboxes is not supported by this server",
    "snapshots": "snapshots are not supported by this server",
    "fork": "forking sandboxes is not supported by this server",
    "network": "sandboxes have no network here; network rules cannot be changed",
    "metrics": "sandbox metrics are not available through the E2B API here; see /metrics",
    "logs": "sandbox logs are not available through the E2B API here",
}


@e2b_endpoint(["GET", "POST", "PUT", "DELETE"])
def unsupported(request: HttpRequest, sandbox_id: str = "", what: str = "", rest: str = "") -> HttpResponse:
    """Calls E2B has and we do not: 501 with what to do instead. The sandbox must still be the caller's."""
    owner = owner_of(request.META)
    if sandbox_id:
        _live_session(owner, sandbox_id)
    message = UNSUPPORTED.get(what, f"{request.method} {request.path} is not supported by this server")
    return e2b_error(501, message)
