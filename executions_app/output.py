"""Batching of live output into seq-numbered chunks: persisted first, broadcast after commit.

One INSERT per printed line would make a chatty program hammer the database; instead output is buffered and
flushed when enough has arrived or enough time has passed, so a client sees output within ~0.1 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from typing import Any

from django.db import connection, transaction

from executions_app.models import ExecutionOutputChunk

logger = logging.getLogger(__name__)

FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 0.1


def execution_group(execution_id: str) -> str:
    """The channel-layer group that carries one execution's live events."""
    return f"execution.{execution_id}"


def broadcast(execution_id: str, message: dict[str, Any]) -> None:
    """Queue one event for the execution's channel group; losing it is harmless (clients replay from the DB).

    Sending goes through one background thread, in order: a channel-layer send costs milliseconds
    (an event loop hop, a Redis round trip) that must not sit on an execution's critical path.
    """
    _sender().put((execution_group(execution_id), {"type": "execution.event", **message}))


_queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] | None = None
_queue_pid = 0
_queue_lock = threading.Lock()


def _sender() -> queue.SimpleQueue[tuple[str, dict[str, Any]]]:
    global _queue, _queue_pid
    with _queue_lock:
        # django-q2 forks its workers: a queue inherited from the parent has no thread behind it.
        if _queue is None or _queue_pid != os.getpid():
            _queue, _queue_pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(
                target=_send_forever, args=(_queue,), name="channel-broadcast", daemon=True
            ).start()
        return _queue


def _send_forever(pending: queue.SimpleQueue[tuple[str, dict[str, Any]]]) -> None:
    from channels.layers import get_channel_layer

    # One event loop for the life of the thread: the Redis channel layer keeps its connections per event
    # loop, so async_to_sync (a new loop per call) paid a new Redis connection for every broadcast.
    loop = asyncio.new_event_loop()
    while True:
        group, message = pending.get()
        try:
            layer = get_channel_layer()
            if layer is not None:
                loop.run_until_complete(layer.group_send(group, message))
        except Exception:
            logger.warning("broadcast to %s failed", group, exc_info=True)


class OutputRecorder:
    """Collects stdout/stderr events of one execution and writes them as chunks in batches.

    A batch is written when 64 KiB are pending or 0.1 s after the previous write, whichever comes first. The
    time-based write must also happen when no further output arrives (a `print` followed by a long silence),
    so a background thread flushes what has waited too long. That thread writes on its own connection, which
    only works when the caller is not inside a transaction (the worker's normal case); inside one, the
    recorder flushes inline, on the next event and at the end.
    """

    def __init__(self, execution_id: str, *, start_seq: int = 0, release_connection: bool = False) -> None:
        self.execution_id = execution_id
        self.seq = start_seq
        self.pending: list[tuple[str, str]] = []
        self.pending_bytes = 0
        self.last_flush = time.monotonic()
        self.kept: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        self._background = not connection.in_atomic_block
        # The stream pool's threads give their connection back after each write (see execution_run).
        self._release_connection = release_connection and self._background

    def add(self, stream: str, data: str) -> None:
        if not data:
            return
        with self._lock:
            self.kept[stream].append(data)
            if self.pending and self.pending[-1][0] == stream:
                self.pending[-1] = (stream, self.pending[-1][1] + data)
            else:
                self.pending.append((stream, data))
            self.pending_bytes += len(data)
            if self.pending_bytes >= FLUSH_BYTES or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
                self._flush_locked()
            elif self._background and self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_when_due, name=f"output-{self.execution_id}", daemon=True
                )
                self._flusher.start()

    def flush(self) -> None:
        """Write everything pending now and stop the background flusher (the execution has ended)."""
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join(timeout=30)
        with self._lock:
            self._flush_locked()

    def _flush_when_due(self) -> None:
        try:
            while not self._closed.wait(FLUSH_SECONDS / 4):
                with self._lock:
                    if self.pending and time.monotonic() - self.last_flush >= FLUSH_SECONDS:
                        self._flush_locked()
        except Exception:
            logger.exception(
                "background output flush of %s failed; output is written at the end", self.execution_id
            )
        finally:
            connection.close()

    def _flush_locked(self) -> None:
        if not self.pending:
            self.last_flush = time.monotonic()
            return
        chunks = [
            ExecutionOutputChunk(
                execution_id=self.execution_id, seq=self.seq + offset, stream=stream, data=data
            )
            for offset, (stream, data) in enumerate(self.pending, start=1)
        ]
        with transaction.atomic():
            ExecutionOutputChunk.objects.bulk_create(chunks)
            messages = [{"event": "output", "seq": c.seq, "stream": c.stream, "data": c.data} for c in chunks]
            transaction.on_commit(lambda: self._broadcast_all(messages))
        # Advanced only once stored: a failed write leaves the output pending, its seqs unused.
        self.seq += len(chunks)
        self.pending, self.pending_bytes = [], 0
        self.last_flush = time.monotonic()
        if self._release_connection:
            connection.close()

    def _broadcast_all(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            broadcast(self.execution_id, message)

    def text(self, stream: str) -> str:
        return "".join(self.kept[stream])
