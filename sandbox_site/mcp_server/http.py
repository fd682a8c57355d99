"""MCP's streamable HTTP transport at /mcp, on the web server that serves the API.

asgi.py sends the "http" scopes of /mcp and every "lifespan" scope here. A request is judged from its headers
before its body is read, as the API's front door does (body_guard.py): the Host must be one of
ALLOWED_HOSTS, a browser's Origin must be this site's, an API key (`Authorization: Bearer` or `X-API-Key`,
checked by the API's own `api_key_of`) must name an active key, and an announced body must be within
SANDBOX_MAX_REQUEST_BYTES, else 400/403/401/413 in the API's error shape. /mcp does not pass through
BodyGuard or Django's middleware, so nothing there buffers the streamed answers. The key's owner rides in
the ASGI scope to the tools (tools.py: `owner_of`).

The MCP SDK serves the request (stateless: no session is kept between requests, so any of uvicorn's web
processes can answer any request of a client) and streams its answer as server-sent events, which carry
the execute tool's progress notifications while the code runs.

Its session manager needs a task group that outlives each request. uvicorn runs the ASGI lifespan and the
manager starts and stops with the server; daphne (`runserver`) has no lifespan, so the first /mcp request
there starts it in a task of the server's event loop instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings

from sandbox_site.api.authentication import UnknownApiKey, api_key_of
from sandbox_site.api.errors import error_body
from sandbox_site.body_guard import NO_CREDENTIALS_MESSAGE, meta_of
from sandbox_site.mcp_server.tools import build_server
from sandbox_site.request_id import request_id_from
from sandbox_site.routing import origin_allowed

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
MCP_PATHS = frozenset({"/mcp", "/mcp/"})
# The ASGI scope key under which the front door hands the authenticated owner to the tools.
OWNER_SCOPE_KEY = "sandbox.owner"


def _owner_of(ctx: Context) -> Any:
    return ctx.request_context.request.scope[OWNER_SCOPE_KEY]  # type: ignore[union-attr]


def _key_owner(meta: dict[str, str]) -> tuple[Any, str]:
    """(owner, "") for an active API key, else (None, the 401's message)."""
    try:
        key = api_key_of(meta.get("HTTP_AUTHORIZATION", ""), meta.get("HTTP_X_API_KEY"))
    except UnknownApiKey as exc:
        return None, str(exc)
    if key is None:
        return None, NO_CREDENTIALS_MESSAGE
    return key.owner, ""


_check_key = database_sync_to_async(_key_owner, thread_sensitive=False)


class McpHttp:
    """The ASGI app for /mcp and for the server's lifespan (see the module docstring)."""

    def __init__(self) -> None:
        self.server = build_server(owner_of=_owner_of)
        # The SDK's own Host/Origin check lists fixed names; ALLOWED_HOSTS and the site's origins rule here.
        self.app = self.server.streamable_http_app(
            streamable_http_path="/mcp",
            stateless_http=True,
            max_request_body_size=settings.SANDBOX_MAX_REQUEST_BYTES,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self._running: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        meta = meta_of(scope)
        request_id = request_id_from(meta.get("HTTP_X_REQUEST_ID", ""))
        domain, _ = split_domain_port(meta.get("HTTP_HOST", ""))
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            await _send_error(
                send, 400, "bad_request", "the Host header is not one this server answers to", request_id
            )
            return
        origin = meta.get("HTTP_ORIGIN")
        if origin is not None and not origin_allowed(origin, scope):
            await _send_error(
                send, 403, "forbidden", "requests from other sites' pages are refused", request_id
            )
            return
        owner, refusal = await _check_key(meta)
        if owner is None:
            await _send_error(send, 401, "unauthorized", refusal, request_id, _WWW_AUTHENTICATE)
            return
        announced = meta.get("CONTENT_LENGTH", "")
        if announced.isdigit() and int(announced) > settings.SANDBOX_MAX_REQUEST_BYTES:
            # The SDK would refuse it too (a chunked body it cuts off itself), in plain text.
            limit = settings.SANDBOX_MAX_REQUEST_BYTES
            await _send_error(
                send, 413, "too_large", f"MCP requests are limited to {limit} bytes", request_id
            )
            return
        await self._ensure_started()
        scope = {**scope, "path": "/mcp", OWNER_SCOPE_KEY: owner}
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        """The ASGI lifespan protocol: start the session manager at startup, stop it at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._ensure_started()
                except Exception as exc:
                    logger.exception("the MCP session manager did not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ensure_started(self) -> None:
        """Start the session manager in a task of its own (its task group must be entered and left in one
        task), once per process; wait until it runs."""
        if self._running is None:
            self._running, self._stop = asyncio.Event(), asyncio.Event()
            self._runner = asyncio.create_task(self._run_manager(), name="mcp-session-manager")
        if self._running.is_set():
            return
        assert self._runner is not None
        running = asyncio.ensure_future(self._running.wait())
        await asyncio.wait({running, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        if not self._running.is_set():
            running.cancel()
            self._runner.result()  # the manager's start-up error
            raise RuntimeError("the MCP session manager stopped")

    async def _run_manager(self) -> None:
        assert self._running is not None and self._stop is not None
        async with self.server.session_manager.run():
            self._running.set()
            await self._stop.wait()

    async def _shutdown(self) -> None:
        if self._runner is not None and self._stop is not None:
            self._stop.set()
            await self._runner


_WWW_AUTHENTICATE = [(b"www-authenticate", b'Bearer realm="api"')]


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
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class McpRouter:
    """HTTP and lifespan in front of the site: /mcp and the lifespan to the MCP app, every other request to
    `site` (the API's front door and Django)."""

    def __init__(self, site: Any) -> None:
        self.site = site
        self.mcp = McpHttp()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or scope["path"] in MCP_PATHS:
            await self.mcp(scope, receive, send)
            return
        await self.site(scope, receive, send)
