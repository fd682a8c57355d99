"""Live answers: blocking work in a thread of its own, its output relayed to the client as it comes.

Django serves a StreamingHttpResponse under ASGI chunk by chunk only when its iterator is asynchronous (a
synchronous one is read to the end first), and the middleware stack is synchronous (sync_stack.py), so a view
returns an async generator from here. The work runs on a plain thread (ORM calls and the executor's stream
block), each chunk is handed to the event loop, and when the client goes away the work is told through
`Relay.cancelled` so it can cancel the execution it runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable

from django.db import close_old_connections

logger = logging.getLogger(__name__)

_DONE = object()


# Chunks waiting for a slow client: past this the worker thread waits (a file download is not read into memory).
QUEUE_CHUNKS = 64


class Relay:
    """What the worker thread holds: `send(chunk)` to the client, `cancelled` once the client left."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        self._loop = loop
        self._queue = queue
        self.cancelled = threading.Event()

    def send(self, chunk: bytes) -> None:
        """Queue `chunk` for the client (waiting while a bounded queue is full); dropped once the client left."""
        self._put(chunk)

    def _put(self, item: object) -> None:
        if not self._queue.maxsize:
            # Never waits: an execution's output must not stall its stream (the executor caps it anyway).
            if not self.cancelled.is_set() or item is _DONE:
                try:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
                except RuntimeError:  # the event loop is gone (the server stops)
                    self.cancelled.set()
            return
        while not self.cancelled.is_set():
            try:
                future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
            except RuntimeError:  # the event loop is gone (the server stops)
                self.cancelled.set()
                return
            try:
                future.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                if not future.cancel():
                    return  # it went in just as the wait ended

    def _finish(self) -> None:
        self._put(_DONE)


async def relayed(
    work: Callable[[Relay], None],
    *,
    name: str,
    heartbeat: Callable[[], bytes] | None = None,
    heartbeat_seconds: float = 15.0,
    bounded: bool = False,
) -> AsyncIterator[bytes]:
    """Run `work(relay)` on a new thread and yield what it sends until it returns.

    `heartbeat()` is sent after `heartbeat_seconds` of silence (Connect keepalive frames), so proxies and
    clients with idle timeouts keep a quiet long-running stream open. With `bounded`, `relay.send` waits
    while QUEUE_CHUNKS chunks wait for the client (bulk data: a download is never read into memory whole).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=QUEUE_CHUNKS if bounded else 0)
    relay = Relay(loop, queue)

    def run() -> None:
        try:
            work(relay)
        except Exception:
            logger.exception("%s failed", name)
        finally:
            close_old_connections()
            relay._finish()

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            try:
                item = (
                    await asyncio.wait_for(queue.get(), heartbeat_seconds) if heartbeat else await queue.get()
                )
            except TimeoutError:
                assert heartbeat is not None
                yield heartbeat()
                continue
            if item is _DONE:
                return
            assert isinstance(item, bytes)
            yield item
    finally:
        # Normal end, or the client went away (the generator is closed or cancelled): either way the work
        # has nobody to talk to any more.
        relay.cancelled.set()
