"""Under ASGI a request's whole synchronous path (middleware, URL resolving, view) is one crossing into the
request's thread (sandbox_site/sync_stack.py), not one or more per middleware."""

from __future__ import annotations

import pytest
from asgiref import sync
from asgiref.testing import ApplicationCommunicator
from django.core.handlers.asgi import ASGIHandler

from sandbox_site.sync_stack import SyncStackASGIHandler
from sandbox_site.testing import asgi_get_scope


def count_sync_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hops: list[str] = []
    original = sync.SyncToAsync.__call__

    async def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)
    return hops


def asgi_get(handler: ASGIHandler, path: str) -> int:
    """GET `path` through `handler` as an ASGI server would call it; the response status."""
    scope = asgi_get_scope(path, [(b"authorization", b"Bearer scp_unknown")])

    async def exchange() -> int:
        communicator = ApplicationCommunicator(handler, scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(10)
        while (await communicator.receive_output(10)).get("more_body"):
            pass
        await communicator.wait(10)
        return start["status"]

    return sync.async_to_sync(exchange)()


@pytest.mark.django_db
def test_an_api_request_crosses_into_the_sync_thread_once_for_its_whole_path(monkeypatch):
    handler = SyncStackASGIHandler()
    hops = count_sync_hops(monkeypatch)
    assert asgi_get(handler, "/api/v1/sessions") == 401
    # The request signals, the chain (every middleware, URL resolving and the view), logging the error
    # answer, closing the response: a fixed few, whatever the number of middleware.
    assert len(hops) <= 5, hops
    assert not any("process_request" in hop or "process_response" in hop or "view" in hop for hop in hops), (
        hops
    )


@pytest.mark.django_db
def test_the_stock_handler_crosses_per_middleware_and_again_for_the_view(monkeypatch):
    handler = ASGIHandler()
    hops = count_sync_hops(monkeypatch)
    assert asgi_get(handler, "/api/v1/sessions") == 401
    assert sum("process_request" in hop or "process_response" in hop for hop in hops) >= 6, hops
