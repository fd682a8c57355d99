"""Websocket routes of every app, collected in one list for the ASGI router, and the origin check for them."""

from __future__ import annotations

from typing import Any
from urllib.parse import ParseResult

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from executions_app.consumers import ExecutionStreamConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/executions/<str:execution_id>/", ExecutionStreamConsumer.as_asgi()),
]


class BrowserOriginValidator(OriginValidator):
    """Refuses a browser handshake from a foreign page; lets API clients, which send no Origin, through.

    Browsers always send Origin on a websocket handshake, so a cross-site page riding on the console's
    cookie is refused here. Channels' AllowedHostsOriginValidator also refuses a handshake without Origin,
    which shuts out agents (Python's `websockets`, curl), yet they must authenticate with an API key,
    which a foreign page cannot supply.
    """

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


def allowed_hosts_or_no_origin(application: Any) -> BrowserOriginValidator:
    return BrowserOriginValidator(application, settings.ALLOWED_HOSTS)
