"""The front door of HTTP: a request is refused from its headers, before its body is read, and a body is cut
off as it streams once it passes its path's limit.

Django's ASGIHandler reads the whole body (into a temporary file) before any Django middleware or view runs,
so DRF's 401 or a view's 413 comes only after the upload has been taken in. This ASGI middleware sits in
front of Django and decides from the request line and headers alone:

- under /api/, everything but the public health, schema and docs endpoints needs credentials: an API key
  (checked by `api_key_of`, the very function DRF's ApiKeyAuthentication calls) or a logged-in console
  session (checked by `django.contrib.auth.get_user`, as AuthenticationMiddleware and so DRF's
  SessionAuthentication do); without them the answer is 401. A request with no credential header or cookie
  at all is refused at once; present credentials are looked up here only when the body is worth refusing
  early (over SMALL_BODY_BYTES, or chunked): a small body is read and Django's authentication, which calls
  the same functions, gives the same 401;
- under /e2b/ (the E2B surface), everything but /e2b/health needs an API key or a sandbox's access token,
  judged by sandbox_site/e2b/auth.py the same way (none at all: 401 at once; a large body's: looked up);
- the console's upload path needs a logged-in session; without one the answer is the login redirect the
  view itself would give;
- a Content-Length over the path's limit is a 413 (uploads: SANDBOX_MAX_UPLOAD_REQUEST_BYTES, everything else:
  SANDBOX_MAX_REQUEST_BYTES);
- a body is counted as it arrives (a chunked body announces no length): past the limit the application is
  told the client went away, the client gets 413, and the connection is closed with the rest unread.

Answers given here carry `Connection: close`, which makes uvicorn close the connection after the answer
instead of reading (and discarding) the rest of a body nobody wants. Django still does everything else
(DRF still authenticates, CSRF is still checked): this layer only refuses earlier, it never admits more.

It only works under a server that hands the body to the application as it arrives (uvicorn). daphne
buffers the whole body in memory before it calls the application at all (daphne issue #483), which is why
`manage.py serve` runs uvicorn; see README "Serving".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

# DRF's views before our errors module: errors imports them, and their parser setting imports errors back.
import rest_framework.views  # noqa: F401
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.http.cookie import parse_cookie
from django.shortcuts import resolve_url

from sandbox_site.api.authentication import UnknownApiKey, api_key_of
from sandbox_site.api.errors import error_body
from sandbox_site.e2b import auth as e2b_auth
from sandbox_site.request_id import request_id_from

Scope = dict[str, Any]
Message = dict[str, Any]

NO_CREDENTIALS_MESSAGE = "Authentication credentials were not provided."
# Bodies up to this size cost less to read than a credential lookup: their credentials are left to Django.
SMALL_BODY_BYTES = 64 * 1024
# API paths anyone may read: the index, /health and /health/detailed (probes), the schema and the docs;
# written without the trailing slash every API path may also carry (sandbox_site/api/routes.py).
PUBLIC_API_PATHS = frozenset({"/api/v1", "/api/v1/health", "/api/v1/health/detailed", "/api/v1/schema"})
PUBLIC_API_PREFIXES = ("/api/docs/",)
API_UPLOAD_PATH = re.compile(r"^/api/v1/sessions/[^/]+/files/upload/?$")
CONSOLE_UPLOAD_PATH = re.compile(r"^/sessions/[^/]+/files/upload/$")
E2B_PREFIX = "/e2b/"


@dataclass(frozen=True)
class PathRule:
    """What a path demands before its body is read: a body limit, and whose credentials (if any)."""

    limit: int
    access: str  # "open", "api" (API key or console login), "console" (console login) or "e2b" (e2b/auth.py)


def rule_for(path: str) -> PathRule:
    upload = bool(API_UPLOAD_PATH.match(path) or CONSOLE_UPLOAD_PATH.match(path))
    limit = settings.SANDBOX_MAX_UPLOAD_REQUEST_BYTES if upload else settings.SANDBOX_MAX_REQUEST_BYTES
    if path.startswith("/api/"):
        public = path.removesuffix("/") in PUBLIC_API_PATHS or path.startswith(PUBLIC_API_PREFIXES)
        return PathRule(limit, "open" if public else "api")
    if path.startswith(E2B_PREFIX):
        # The E2B surface: an API key, or a sandbox's access token (sandbox_site/e2b/auth.py); uploads to
        # envd's /files take the upload limit; /health is public, as envd's is.
        if path == E2B_PREFIX + "files":
            limit = settings.SANDBOX_MAX_UPLOAD_REQUEST_BYTES
        return PathRule(limit, "open" if path == E2B_PREFIX + "health" else "e2b")
    return PathRule(limit, "console" if upload else "open")


def meta_of(scope: Scope) -> dict[str, str]:
    """Header values as Django's ASGIRequest.META will hold them (repeated headers joined the same way), so
    the credentials judged here are the ones DRF judges."""
    meta: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        key = {"content-length": "CONTENT_LENGTH", "content-type": "CONTENT_TYPE"}.get(name)
        key = key or "HTTP_" + name.upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if key == "HTTP_COOKIE":
            value = value.rstrip("; ")
            if key in meta:
                value = meta[key] + "; " + value
        elif key in meta:
            value = meta[key] + "," + value
        meta[key] = value
    return meta


class _SessionData(dict):
    """A session's data, read-only to the store: `get_user` flushes (or re-keys) a session whose hash no
    longer verifies; that is left to the request's own pass through AuthenticationMiddleware."""

    def flush(self) -> None:
        self.clear()

    def cycle_key(self) -> None:
        pass


def logged_in(meta: dict[str, str]) -> bool:
    """Whether the request's session cookie belongs to an active, logged-in console user."""
    session_key = parse_cookie(meta.get("HTTP_COOKIE", "")).get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=_SessionData(store.items())))  # type: ignore[arg-type]
    return bool(user.is_authenticated and user.is_active)


def credentials_refusal(meta: dict[str, str], *, api_key_allowed: bool) -> str | None:
    """None when the request's credentials hold, else the 401's message.

    The API's order: a key that is present must be valid (no fall-back to the cookie), no key means the
    console session decides.
    """
    if api_key_allowed:
        try:
            if api_key_of(meta.get("HTTP_AUTHORIZATION", ""), meta.get("HTTP_X_API_KEY")) is not None:
                return None
        except UnknownApiKey as exc:
            return str(exc)
    return None if logged_in(meta) else NO_CREDENTIALS_MESSAGE


def small_body(meta: dict[str, str]) -> bool:
    """Whether the request announces a body of at most SMALL_BODY_BYTES (or none: no length, not chunked)."""
    announced = meta.get("CONTENT_LENGTH", "")
    if announced:
        return announced.isdigit() and int(announced) <= SMALL_BODY_BYTES
    return "HTTP_TRANSFER_ENCODING" not in meta


def carries_credentials(meta: dict[str, str], *, api_key_allowed: bool) -> bool:
    """Whether there is anything for `credentials_refusal` to look up (a key header or a session cookie)."""
    if api_key_allowed and ("HTTP_AUTHORIZATION" in meta or "HTTP_X_API_KEY" in meta):
        return True
    return settings.SESSION_COOKIE_NAME in parse_cookie(meta.get("HTTP_COOKIE", ""))


# Off the event loop, in the shared thread pool rather than the one thread-sensitive thread: a check must
# not queue behind a slow sync view. channels' wrapper closes stale connections around each call.
_check_credentials = database_sync_to_async(credentials_refusal, thread_sensitive=False)


async def _e2b_refusal(meta: dict[str, str]) -> str | None:
    """The E2B surface's credentials, judged like the API's: none at all is refused at once, a large body's
    are looked up here, a small body's are left to the view (which answers in E2B's shape)."""
    if not e2b_auth.carries_credentials(meta):
        return e2b_auth.NO_CREDENTIALS_MESSAGE
    if small_body(meta):
        return None
    return await _check_e2b_credentials(meta)


_check_e2b_credentials = database_sync_to_async(e2b_auth.credentials_refusal, thread_sensitive=False)


def _mib(limit: int) -> str:
    return f"{limit / (1024 * 1024):.2f}".rstrip("0").rstrip(".") + f" MiB ({limit} bytes)"


class BodyGuard:
    """ASGI middleware for the "http" scope; see the module docstring. Other scopes pass through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = rule_for(scope["path"])
        meta = meta_of(scope)
        request_id = request_id_from(meta.get("HTTP_X_REQUEST_ID", ""))

        if rule.access == "e2b":
            refusal = await _e2b_refusal(meta)
            if refusal is not None:
                await _send_error(send, 401, "unauthorized", refusal, request_id)
                return
        elif rule.access != "open":
            api_key_allowed = rule.access == "api"
            if not carries_credentials(meta, api_key_allowed=api_key_allowed):
                refusal = NO_CREDENTIALS_MESSAGE  # nothing to look up: no thread hop, no query
            elif small_body(meta):
                # Nothing worth refusing early: Django judges the same credentials with the same function
                # (DRF's authentication, the view's login check) after reading at most SMALL_BODY_BYTES, so
                # the lookup and its thread hop are spared on every ordinary API call.
                refusal = None
            else:
                refusal = await _check_credentials(meta, api_key_allowed=api_key_allowed)
            if refusal is not None:
                if rule.access == "api":
                    await _send_error(send, 401, "unauthorized", refusal, request_id, _WWW_AUTHENTICATE)
                else:
                    await _send_login_redirect(send, scope, meta)
                return

        announced = meta.get("CONTENT_LENGTH", "")
        if announced.isdigit() and int(announced) > rule.limit:
            await _send_too_large(send, rule.limit, request_id)
            return

        await self._call_capped(scope, receive, send, rule.limit, request_id)

    async def _call_capped(self, scope: Scope, receive: Any, send: Any, limit: int, request_id: str) -> None:
        """Run the application with the body counted as it arrives; past `limit` the application sees a
        disconnect and the client gets 413 (unless the application had already started its answer)."""
        received = 0
        cut_off = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, cut_off
            if cut_off:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django's read_body drops its spooled copy on a disconnect and answers nothing.
                    cut_off = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, capped_receive, tracked_send)
        if cut_off and not started:
            await _send_too_large(send, limit, request_id)


_WWW_AUTHENTICATE = [(b"www-authenticate", b'Bearer realm="api"')]


async def _send_too_large(send: Any, limit: int, request_id: str) -> None:
    message = f"request bodies to this endpoint are limited to {_mib(limit)}"
    await _send_error(send, 413, "too_large", message, request_id)


async def _send_error(
    send: Any,
    status: int,
    code: str,
    message: str,
    request_id: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(status, code, message)
    body["request_id"] = request_id
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _send_login_redirect(send: Any, scope: Scope, meta: dict[str, str]) -> None:
    """What `console_login_required` answers: an htmx request gets HX-Redirect, a plain one a 302."""
    page = scope["path"]
    if meta.get("HTTP_HX_REQUEST") == "true":
        current = meta.get("HTTP_HX_CURRENT_URL", "")
        page = re.sub(r"^[a-z]+://[^/]+", "", current) or page
    location = f"{resolve_url(settings.LOGIN_URL)}?next={quote(page)}".encode("latin-1")
    if meta.get("HTTP_HX_REQUEST") == "true":
        status, headers = 200, [(b"hx-redirect", location)]
    else:
        status, headers = 302, [(b"location", location)]
    headers += [(b"content-length", b"0"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
