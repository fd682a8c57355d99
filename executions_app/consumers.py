"""Websocket stream of one execution: `/ws/executions/<id>/`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer

from executions_app.models import FINISHED_EXECUTION_STATUSES, Execution, ExecutionOutputChunk
from executions_app.output import execution_group
from sessions_app.models import ApiKey

logger = logging.getLogger(__name__)

# With the in-process layer, a worker in another process cannot reach this consumer: the database is the
# live path, read this often. With a shared layer (Redis) events arrive pushed; the poll only repairs a
# broadcast that was lost (broadcasting is best-effort, DESIGN.md §3).
POLL_INTERVAL_LOCAL = 0.15
POLL_INTERVAL_SHARED = 2.0
REPLAY_BATCH = 500

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class ExecutionStreamConsumer(AsyncJsonWebsocketConsumer):
    """Streams one execution's output to a browser or an API client as JSON events, then its result.

    Authenticates in connect(): an API key (`Authorization: Bearer`, `X-API-Key`, or `?token=`) if one is
    given, else the console's session cookie. An execution the caller may not see is refused exactly like a
    missing one. After `?after=<seq>` it replays stored chunks, then forwards live ones until the result.

    Every chunk goes out once and in seq order whatever path brought it: the replay, a channel-layer event
    or the database poll. `_catch_up` (under a lock) sends what is stored after the last sent seq; a live
    event is sent directly only when it is the next seq, anything else triggers a catch-up. The status is
    read before the chunks, so once it reads finished every chunk is already stored: the result follows
    the last chunk, and the socket closes.
    """

    execution_id: str
    last_seq: int
    finished: bool
    sent_status: str | None

    async def connect(self) -> None:
        self.execution_id = self.scope["url_route"]["kwargs"]["execution_id"]
        self.last_seq = 0
        self.finished = False
        self.sent_status = None
        self.joined = False
        self.lock = asyncio.Lock()
        self.poller: asyncio.Task[None] | None = None
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        user = await self._authenticate(query)
        if user is None:
            await self._refuse(CLOSE_UNAUTHENTICATED, "unauthenticated", "Log in, or send an API key.")
            return
        after = (query.get("after") or ["0"])[0]
        if not after.isdigit() or int(after) > 2**31:
            await self._refuse(CLOSE_BAD_REQUEST, "validation_error", "after must be a non-negative integer")
            return
        if not await self._visible(user):
            await self._refuse(CLOSE_NOT_FOUND, "execution_not_found", f"no execution {self.execution_id!r}")
            return
        self.last_seq = int(after)
        # Join before the replay: an event sent meanwhile waits in the channel and is de-duplicated by seq.
        if self.channel_layer is not None:
            await self.channel_layer.group_add(execution_group(self.execution_id), self.channel_name)
            self.joined = True
        await self._send_status(await self._status())
        await self._catch_up()
        if not self.finished:
            self.poller = asyncio.create_task(self._poll())

    async def disconnect(self, code: int) -> None:
        self.finished = True
        poller = getattr(self, "poller", None)
        if poller is not None and poller is not asyncio.current_task():
            poller.cancel()
        if getattr(self, "joined", False) and self.channel_layer is not None:
            await self.channel_layer.group_discard(execution_group(self.execution_id), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients have nothing to say; a ping gets a pong so proxies and clients can check liveness."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def execution_event(self, message: dict[str, Any]) -> None:
        """A live event from the channel group (executions_app.output.broadcast)."""
        if self.finished:
            return
        event = message.get("event")
        if event == "output":
            async with self.lock:
                seq = int(message.get("seq") or 0)
                if self.finished or seq <= self.last_seq:
                    return
                if seq == self.last_seq + 1:
                    await self._send_chunk(seq, str(message.get("stream")), str(message.get("data", "")))
                    return
            await self._catch_up()  # a gap: fetch what is missing from the database, in order
        elif event == "status":
            async with self.lock:
                if not self.finished:
                    await self._send_status(message.get("status"))
        elif event == "result":
            await self._catch_up()

    # --- internals ------------------------------------------------------------------------------------

    async def _poll(self) -> None:
        local = isinstance(self.channel_layer, InMemoryChannelLayer) or self.channel_layer is None
        interval = POLL_INTERVAL_LOCAL if local else POLL_INTERVAL_SHARED
        try:
            while not self.finished:
                await asyncio.sleep(interval)
                await self._catch_up()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("polling output of %s failed", self.execution_id)
            await self._refuse(
                1011, "internal_error", "the output stream failed; reconnect with ?after=<seq>"
            )

    async def _catch_up(self) -> None:
        async with self.lock:
            if self.finished:
                return
            status, chunks = await self._stored_since(self.last_seq)
            if status is None:
                await self._refuse(CLOSE_NOT_FOUND, "execution_not_found", "the execution was deleted")
                return
            for chunk in chunks:
                await self._send_chunk(chunk["seq"], chunk["stream"], chunk["data"])
            if status in FINISHED_EXECUTION_STATUSES:
                self.finished = True
                await self.send_json(await self._result())
                await self.close(code=1000)
            else:
                # pending -> running, as the poll sees it: from another process the worker's status
                # broadcast cannot reach an in-process layer.
                await self._send_status(status)

    async def _send_status(self, status: Any) -> None:
        if status == self.sent_status:
            return
        self.sent_status = status
        await self.send_json({"type": "status", "execution_id": self.execution_id, "status": status})

    async def _send_chunk(self, seq: int, stream: str, data: str) -> None:
        self.last_seq = seq
        await self.send_json({"type": "output", "seq": seq, "stream": stream, "data": data})

    async def _refuse(self, code: int, error: str, message: str) -> None:
        self.finished = True
        await self.send_json({"type": "error", "error": error, "message": message})
        await self.close(code=code)

    async def _authenticate(self, query: dict[str, list[str]]) -> Any:
        raw = _key_from_headers(self.scope.get("headers", [])) or (query.get("token") or [""])[0]
        if raw:
            # A key that is present must be valid, as in the REST API: no silent fall-back to the cookie.
            key = await database_sync_to_async(ApiKey.objects.authenticate)(raw)
            return key.owner if key is not None else None
        user = self.scope.get("user")
        if user is not None and user.is_authenticated and user.is_active:
            return user
        return None

    @database_sync_to_async
    def _visible(self, user: Any) -> bool:
        return Execution.objects.visible_to(user).filter(pk=self.execution_id).exists()

    @database_sync_to_async
    def _status(self) -> str | None:
        return Execution.objects.filter(pk=self.execution_id).values_list("status", flat=True).first()

    @database_sync_to_async
    def _stored_since(self, after: int) -> tuple[str | None, list[dict[str, Any]]]:
        # Status first: if it reads finished, the recorder had flushed every chunk before the result row.
        status = Execution.objects.filter(pk=self.execution_id).values_list("status", flat=True).first()
        chunks: list[dict[str, Any]] = []
        while True:
            batch = list(
                ExecutionOutputChunk.objects.filter(execution_id=self.execution_id, seq__gt=after)
                .order_by("seq")
                .values("seq", "stream", "data")[:REPLAY_BATCH]
            )
            chunks += batch
            if len(batch) < REPLAY_BATCH:
                return status, chunks
            after = batch[-1]["seq"]

    @database_sync_to_async
    def _result(self) -> dict[str, Any]:
        execution = Execution.objects.get(pk=self.execution_id)
        return {
            "type": "result",
            "execution_id": execution.id,
            "status": execution.status,
            "exit_code": execution.exit_code,
            "return_value": execution.return_value,
            "error_message": execution.error_message,
            "metrics": execution.metrics,
            "artifacts": execution.artifacts,
            "stdout_truncated": execution.stdout_truncated,
            "stderr_truncated": execution.stderr_truncated,
            "completed_at": execution.completed_at.isoformat() if execution.completed_at else None,
        }


def _key_from_headers(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        elif name == b"x-api-key":
            return value.decode("latin-1").strip()
    return ""
