"""Websocket routes of every app, collected in one list for the ASGI router, and the origin check for them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path

from executions_app.consumers import ExecutionStreamConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/executions/<str:execution_id>/", ExecutionStreamConsumer.as_asgi()),
]


class SameOriginValidator:
    """Refuses a websocket handshake whose Origin is not exactly this site's; lets a handshake without Origin on.

    A browser always sends Origin on a websocket handshake, so a foreign page riding on the console's cookie
    is refused here. The comparison is of scheme, host and port together (an origin is all three): the
    handshake's own origin (its Host header, which must be in ALLOWED_HOSTS, with the scheme it came in on)
    or one listed in CSRF_TRUSTED_ORIGINS (a TLS proxy in front: `https://sandbox.example.com`). Channels'
    AllowedHostsOriginValidator compares host names only, so any other port on the same host - another web
    app on localhost:9999 - passed it.

    A handshake without Origin is not from a browser page (agents: Python's `websockets`, curl); it still
    has to authenticate in the consumer, with an API key or a session cookie, which a foreign page cannot
    make a browser send without an Origin.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = _header(scope, b"origin")
        if origin is None or origin_allowed(origin, scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def parse_origin(text: str) -> Origin | None:
    """(scheme, host, port) of an origin or URL; None when it is not an http(s) origin."""
    try:
        parsed = urlsplit(text.strip())
        port = parsed.port
    except ValueError:
        return None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.hostname:
        return None
    return scheme, parsed.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin the handshake was made to: its Host header (if ALLOWED_HOSTS allows it) and scheme."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, value = proxy_header
        forwarded = _header(scope, name.removeprefix("HTTP_").replace("_", "-").lower().encode())
        if forwarded is not None and forwarded.split(",")[0].strip() == value:
            scheme = "https"
    return parse_origin(f"{scheme}://{host}")


def origin_allowed(origin: str, scope: dict[str, Any]) -> bool:
    given = parse_origin(origin)
    if given is None:
        return False
    if given == own_origin(scope):
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        wildcard = "://*." in trusted
        allowed = parse_origin(trusted.replace("://*.", "://", 1))
        if allowed is None:
            continue
        scheme, host, port = allowed
        if given == allowed or (
            wildcard and given[0] == scheme and given[2] == port and given[1].endswith("." + host)
        ):
            return True
    return False


def allowed_hosts_or_no_origin(application: Any) -> SameOriginValidator:
    return SameOriginValidator(application)
