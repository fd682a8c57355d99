"""Liveness endpoint: answers without touching the database, so a load balancer sees the process itself."""

from __future__ import annotations

import time

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from sandbox_site import __version__

STARTED_AT = time.monotonic()


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"status": "healthy", "version": __version__, "uptime": round(time.monotonic() - STARTED_AT, 3)}
    )
