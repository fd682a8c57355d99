"""Runs each HTTP request's synchronous code on a thread kept from earlier requests, not on a new one.

Django's ASGI handler gives every request a thread-sensitive context of its own, and asgiref backs a new
context with a new single-thread executor: one new thread per request. Django's database connections are
per thread, so every request also opened a new database connection (a TCP handshake, authentication and the
session set-up statements on MariaDB, a few milliseconds) and left the old one to the garbage collector: at
60 concurrent requests MariaDB refused new connections ("Too many connections"). With a thread kept from an
earlier request, its connection is still open (CONN_MAX_AGE, with Django's health check at the start of each
request), the way a WSGI server's worker threads keep theirs.

The outermost thread-sensitive context decides the executor, so entering one here, around Django's, makes
the view, the middleware, the request signals and the body guard's lookups all run on the kept thread. A
thread goes back to the idle list only when nothing runs on it any more: a view still running after its
client went away (Django cancels the request but cannot stop a thread) keeps its thread, which ends when the
view does. At most IDLE_THREADS wait idle per process; the rest end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.db import connections

IDLE_THREADS = 32


class RequestThread(ThreadPoolExecutor):
    """One thread, and how many calls are queued or running on it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self._lock = threading.Lock()
        self.pending = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            self.pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future) -> None:
        with self._lock:
            self.pending -= 1


class RequestThreads:
    """ASGI middleware: HTTP requests run their synchronous parts on kept threads (see the module)."""

    def __init__(self, app: Callable[..., Any], idle_threads: int = IDLE_THREADS) -> None:
        self.app = app
        self.idle_threads = idle_threads
        self._idle: list[RequestThread] = []

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only the event loop's thread touches the idle list, between awaits: no lock needed.
        thread = self._idle.pop() if self._idle else RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.app(scope, receive, send)
        finally:
            if thread.pending == 0 and len(self._idle) < self.idle_threads:
                self._idle.append(thread)
            else:
                # Still busy (an abandoned view) or too many idle: the thread closes its database
                # connections after its last call, then ends.
                thread.submit(connections.close_all)
                thread.shutdown(wait=False)
