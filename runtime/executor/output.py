"""Capture of one output stream: kept up to a byte cap, decoded incrementally, handed out in coalesced chunks.

Bytes past the cap are counted and dropped, never buffered, so a child printing gigabytes costs the daemon
only the reads. Decoding is incremental so a UTF-8 character split across two reads is not mangled.
"""

from __future__ import annotations

import codecs
import os
import selectors
from collections.abc import Callable

# A chunk is handed out once it is this big, or once its oldest byte has waited COALESCE_DELAY seconds:
# many small prints become one event, yet a lone print still reaches the client well within 50 ms.
COALESCE_BYTES = 64 * 1024
COALESCE_DELAY = 0.02
READ_SIZE = 256 * 1024
# A read smaller than this means the child is trickling output: wait before reading that stream again.
PARK_BELOW = 16 * 1024


class StreamCapture:
    """One stream (stdout or stderr) of one execution."""

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.kept = 0
        self.dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self._pending_bytes = 0
        self.pending_since: float | None = None

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def feed(self, data: bytes, now: float) -> None:
        room = self.cap - self.kept
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
            if not data:
                return
        self.kept += len(data)
        text = self._decoder.decode(data)
        if text:
            self._pending.append(text)
            self._pending_bytes += len(data)
            if self.pending_since is None:
                self.pending_since = now

    def due(self, now: float) -> bool:
        if self.pending_since is None:
            return False
        return self._pending_bytes >= COALESCE_BYTES or now - self.pending_since >= COALESCE_DELAY

    def take(self, final: bool = False) -> str:
        if final:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self._pending.append(tail)
        text = "".join(self._pending)
        self._pending = []
        self._pending_bytes = 0
        self.pending_since = None
        return text


class OutputPipes:
    """The read ends of one execution's stdout, stderr and result pipes, read through its selector.

    A stream whose read came back small is parked (unregistered) for COALESCE_DELAY and then drained in one
    go: a child printing line by line then costs the daemon one wake-up per 20 ms instead of one per line,
    while a child writing fast fills the pipe between reads, so its reads come back big and are never
    parked. Parked streams are drained at once when the child exits: the end of the output is never held.
    """

    def __init__(
        self,
        selector: selectors.BaseSelector,
        captures: dict[int, StreamCapture | None],
        result_cap: int,
        close: Callable[[int], None],
    ) -> None:
        self._selector = selector
        self._captures = dict(captures)
        self._close_fd = close
        self._parked: dict[int, float] = {}
        self.result = bytearray()
        self.result_cap = result_cap
        self.result_overflow = False
        for fd in captures:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)

    @property
    def open(self) -> bool:
        return bool(self._captures)

    def owns(self, fd: int) -> bool:
        return fd in self._captures

    def next_unpark(self) -> float | None:
        return min(self._parked.values()) if self._parked else None

    def on_readable(self, fd: int, now: float, *, running: bool) -> None:
        got = self._read(fd, now, max_reads=1)
        if 0 <= got < PARK_BELOW and running and self._captures.get(fd) is not None:
            self._selector.unregister(fd)
            self._parked[fd] = now + COALESCE_DELAY

    def unpark(self, now: float, *, everything: bool = False) -> None:
        for fd, until in list(self._parked.items()):
            if (everything or now >= until) and self._read(fd, now, max_reads=16) >= 0:
                del self._parked[fd]  # (at EOF, _read already dropped it)
                self._selector.register(fd, selectors.EVENT_READ)

    def _read(self, fd: int, now: float, max_reads: int) -> int:
        """Read what is there; returns the byte count, or -1 at EOF (the fd is then closed)."""
        total = 0
        for _ in range(max_reads):
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                self._close(fd)
                return -1
            total += len(data)
            capture = self._captures[fd]
            if capture is not None:
                capture.feed(data, now)
            elif len(self.result) + len(data) <= self.result_cap:
                self.result += data
            else:
                self.result_overflow = True
        return total

    def _close(self, fd: int) -> None:
        if fd in self._parked:
            del self._parked[fd]
        else:
            self._selector.unregister(fd)
        del self._captures[fd]
        self._close_fd(fd)
