"""Under ASGI the middleware stack runs synchronously: a request crosses into the sync thread a fixed few
times, not once or twice per middleware (sandbox_site/sync_stack.py)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref import sync
from django.conf import settings
from django.test import AsyncClient


def count_sync_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hops: list[str] = []
    original = sync.SyncToAsync.__call__

    async def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)
    return hops


def asgi_get(path: str) -> Any:
    """A request through Django's ASGI request path (the async handler and its middleware adaptation)."""
    return sync.async_to_sync(AsyncClient().get)(path, HTTP_AUTHORIZATION="Bearer scp_unknown")


@pytest.mark.django_db
def test_an_api_request_under_asgi_crosses_into_the_sync_thread_a_few_times_only(monkeypatch):
    hops = count_sync_hops(monkeypatch)
    response = asgi_get("/api/v1/sessions")
    assert response.status_code == 401
    # The stack once, then the async request path's own steps (signals, view middleware, the view, its
    # rendering, logging an error answer); not a pair per middleware.
    assert len(hops) <= 8, hops
    assert not any("process_request" in hop or "process_response" in hop for hop in hops), hops


@pytest.mark.django_db
def test_without_the_sync_stack_every_middleware_hops(monkeypatch, settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("SyncStackMiddleware")]
    hops = count_sync_hops(monkeypatch)
    asgi_get("/api/v1/sessions")
    assert sum("process_request" in hop or "process_response" in hop for hop in hops) >= 6, hops


def test_the_sync_stack_is_the_innermost_middleware():
    assert settings.MIDDLEWARE[-1] == "sandbox_site.sync_stack.SyncStackMiddleware"
