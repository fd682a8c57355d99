"""Routes of the E2B surface, under /e2b: the control API and the in-sandbox services side by side (the SDK
sends both to the same prefix when E2B_API_URL and E2B_SANDBOX_URL point here)."""

from __future__ import annotations

from functools import partial

from django.urls import path

from sandbox_site.e2b import control, envd, interpreter, process

app_name = "e2b"

_unsupported = [
    path(
        f"sandboxes/<str:sandbox_id>/{what}", control.unsupported, {"what": what}, name=f"unsupported-{what}"
    )
    for what in ("pause", "resume", "snapshots", "fork", "network", "metrics", "logs")
]

urlpatterns = [
    # control API (E2B_API_URL)
    path("sandboxes", control.sandboxes, name="sandboxes"),
    path("v2/sandboxes", control.sandboxes, name="sandboxes-v2"),
    path("sandboxes/<str:sandbox_id>", control.sandbox, name="sandbox"),
    path("sandboxes/<str:sandbox_id>/timeout", control.set_timeout, name="timeout"),
    path("sandboxes/<str:sandbox_id>/refreshes", control.refresh, name="refreshes"),
    path("sandboxes/<str:sandbox_id>/connect", control.connect, name="connect"),
    path("v2/sandboxes/<str:sandbox_id>/connect", control.connect, name="connect-v2"),
    path("v2/sandboxes/<str:sandbox_id>/logs", control.unsupported, {"what": "logs"}, name="logs-v2"),
    path("snapshots", partial(control.unsupported, what="snapshots"), name="snapshots"),
    *_unsupported,
    # envd (E2b-Sandbox-Port 49983)
    path("health", envd.health, name="health"),
    path("files", envd.files, name="files"),
    path("filesystem.Filesystem/<str:method>", envd.filesystem, name="filesystem"),
    path("process.Process/<str:method>", process.process, name="process"),
    # code interpreter (E2b-Sandbox-Port 49999)
    path("execute", interpreter.execute, name="execute"),
    path("contexts", interpreter.contexts, name="contexts"),
    path("contexts/<str:context_id>", interpreter.context, name="context"),
    path("contexts/<str:context_id>/<str:action>", interpreter.context, name="context-action"),
    # Everything else E2B has (templates, volumes, secrets, ...): a clear 501 rather than a page not found.
    path("<path:rest>", control.unsupported, name="unsupported"),
]
