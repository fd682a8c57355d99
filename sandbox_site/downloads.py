"""File downloads that reach the client chunk by chunk under ASGI, never whole in the web process's memory.

Under ASGI Django sends a StreamingHttpResponse piece by piece only when its iterator is asynchronous: a
synchronous one is read to the end into a list first ("StreamingHttpResponse must consume synchronous
iterators"), so a 2 GiB workspace file cost 2 GiB of memory before its first byte left. Here each chunk is
pulled from the synchronous source (the executor's stream, or storage) on a worker thread as the client takes
them. Under WSGI (the test client) the plain iterator is already streamed, and it is used as it is.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse


async def pulled(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks`, one at a time, each read on a worker thread (at most one chunk is held here)."""

    def take() -> bytes | None:
        return next(chunks, None)

    pull = sync_to_async(take, thread_sensitive=False)
    try:
        while (chunk := await pull()) is not None:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=False)()


def download_response(
    request: HttpRequest, first: bytes, chunks: Iterator[bytes], path: str
) -> StreamingHttpResponse:
    """An attachment named after `path`'s last part: `first` (read already, so a missing file could still
    be answered with an error), then the rest of `chunks`."""

    def whole() -> Iterator[bytes]:
        yield first
        yield from chunks  # closing this generator closes `chunks` too (a client that went away)

    served_by_asgi = getattr(request, "scope", None) is not None
    response = StreamingHttpResponse(
        pulled(whole()) if served_by_asgi else whole(), content_type="application/octet-stream"
    )
    name = posixpath.basename(path.rstrip("/")) or "download"
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
    return response
