"""Keeps the whole middleware stack synchronous under ASGI: one thread hop per request instead of dozens.

Django builds the stack from the view outwards and runs a middleware that can do both in the mode of the
handler it wraps. The innermost handler under ASGI is async, so without this every middleware built on
MiddlewareMixin (sessions, CSRF, auth, messages, ...) ran in async mode and moved each of its
process_request/process_response calls to the sync thread and back: some thirty thread hops per request,
several milliseconds on the hot path (an execute-sync round trip). This middleware can only run
synchronously, so, placed last (innermost), it makes every middleware outside it synchronous too: the request
crosses into the sync thread once at the top, and once more for the view. It does nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncStackMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
