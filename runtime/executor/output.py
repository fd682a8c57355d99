"""Capture of one output stream: kept up to a byte cap, decoded incrementally, handed out in coalesced chunks.

Bytes past the cap are counted and dropped, never buffered, so a child printing gigabytes costs the daemon
only the reads. Decoding is incremental so a UTF-8 character split across two reads is not mangled.
"""

from __future__ import annotations

import codecs

# A chunk is handed out once it is this big, or once its oldest byte has waited COALESCE_DELAY seconds:
# many small prints become one event, yet a lone print still reaches the client well within 50 ms.
COALESCE_BYTES = 64 * 1024
COALESCE_DELAY = 0.02


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
