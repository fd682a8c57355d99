"""ASGI entry point: HTTP through the body guard into Django, websockets through Channels (routes are added by
the apps), /mcp and the lifespan (which starts and stops the MCP server's session manager) to the MCP server.
Served by uvicorn in production (`manage.py serve`), by daphne under `runserver`."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandbox_site.settings")

# Django must be set up before anything imports models, so the HTTP app is built first. Its request path runs
# synchronously, in one crossing into the request's thread (sync_stack.py).
from sandbox_site.sync_stack import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from sandbox_site.body_guard import BodyGuard  # noqa: E402
from sandbox_site.mcp_server.http import McpRouter  # noqa: E402
from sandbox_site.request_threads import RequestThreads  # noqa: E402
from sandbox_site.routing import allowed_hosts_or_no_origin, websocket_urlpatterns  # noqa: E402

# Credentials and body limits are judged from the headers before Django reads any body (the MCP app judges its
# own requests' the same way).
# Every HTTP request runs its synchronous parts on a kept thread, with its database connection still open.
http = RequestThreads(McpRouter(BodyGuard(django_asgi_app)))

application = ProtocolTypeRouter(
    {
        "http": http,
        "websocket": allowed_hosts_or_no_origin(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": http,
    }
)
