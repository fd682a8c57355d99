"""The ASGI handler that runs the whole request path (middleware, URL resolving, the view) synchronously, in
one crossing into the request's thread.

Django's ASGIHandler builds its middleware chain in async mode: the innermost handler is the async request
path, and each middleware is adapted to the mode of what it wraps. Every middleware here, and every view, is
synchronous, so under the stock handler a request went from the event loop into the sync thread for the
stack, back to the event loop for URL resolving, into the sync thread again for the view, and (before the
stack was made synchronous) once or twice more per middleware: thirty-odd crossings, several milliseconds of
CPU per request on the hot path (an execute-sync round trip). Built in sync mode, as under WSGI, the chain is
one synchronous call; this handler makes that one call on the request's thread (sandbox_site/
request_threads.py keeps those threads). An async view, should one appear, still works: Django's sync
request path runs it with async_to_sync. Streaming responses are sent by the ASGI handler as before.
"""

from __future__ import annotations

from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncStackASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        # get_response_async awaits the chain: one thread-sensitive call runs all of it.
        chain: Any = self._middleware_chain  # type: ignore[has-type]
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)


def get_asgi_application() -> SyncStackASGIHandler:
    """django.core.asgi.get_asgi_application, with the synchronous request path."""
    django.setup(set_prefix=False)
    return SyncStackASGIHandler()
