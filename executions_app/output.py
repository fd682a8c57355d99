"""Batching of live output into seq-numbered chunks: persisted first, broadcast after commit.

One INSERT per printed line would make a chatty program hammer the database; instead output is buffered and
flushed when enough has arrived or enough time has passed, so a client sees output within ~0.1 s.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction

from executions_app.models import ExecutionOutputChunk

logger = logging.getLogger(__name__)

FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 0.1


def execution_group(execution_id: str) -> str:
    """The channel-layer group that carries one execution's live events."""
    return f"execution.{execution_id}"


def broadcast(execution_id: str, message: dict[str, Any]) -> None:
    """Send one event to the execution's channel group; losing it is harmless (clients replay from the DB)."""
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(
                execution_group(execution_id), {"type": "execution.event", **message}
            )
    except Exception:
        logger.warning("broadcast for %s failed", execution_id, exc_info=True)


class OutputRecorder:
    """Collects stdout/stderr events of one execution and writes them as chunks in batches."""

    def __init__(self, execution_id: str, *, start_seq: int = 0) -> None:
        self.execution_id = execution_id
        self.seq = start_seq
        self.pending: list[tuple[str, str]] = []
        self.pending_bytes = 0
        self.last_flush = time.monotonic()
        self.kept: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def add(self, stream: str, data: str) -> None:
        if not data:
            return
        self.kept[stream].append(data)
        if self.pending and self.pending[-1][0] == stream:
            self.pending[-1] = (stream, self.pending[-1][1] + data)
        else:
            self.pending.append((stream, data))
        self.pending_bytes += len(data)
        if self.pending_bytes >= FLUSH_BYTES or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            self.last_flush = time.monotonic()
            return
        chunks = []
        for stream, data in self.pending:
            self.seq += 1
            chunks.append(
                ExecutionOutputChunk(execution_id=self.execution_id, seq=self.seq, stream=stream, data=data)
            )
        self.pending, self.pending_bytes = [], 0
        with transaction.atomic():
            ExecutionOutputChunk.objects.bulk_create(chunks)
            messages = [{"event": "output", "seq": c.seq, "stream": c.stream, "data": c.data} for c in chunks]
            transaction.on_commit(lambda: self._broadcast_all(messages))
        self.last_flush = time.monotonic()

    def _broadcast_all(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            broadcast(self.execution_id, message)

    def text(self, stream: str) -> str:
        return "".join(self.kept[stream])
