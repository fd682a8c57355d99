"""What tests share for waiting on work another thread or process does (a worker, a sandbox, a server).

A test never reads how long something took: it waits until the condition holds and fails, with a message
naming what it waited for, only when the condition still does not hold after a deadline. The deadline
keeps a broken run from hanging; it is generous on purpose (two busy cores may be shared by several test
runs), so it is never a claim about speed. Figures about speed live in bench/.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Enough for a sandbox to start, a worker to pick up a task or a server to answer on a loaded machine.
DEFAULT_TIMEOUT = 60.0


def wait_until(
    condition: Callable[[], T],
    *,
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
    context: Callable[[], str] | None = None,
) -> T:
    """Call `condition` until it returns something truthy, and return that value.

    `what` completes "timed out waiting for ..." in the failure message, which also shows the condition's
    last value and, when given, `context()` (a log's tail, say). Exceptions of the `ignoring` types count
    as "not yet"; any other exception, such as one the condition raises because waiting longer is pointless
    (the process it waits on has exited), ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = condition()
        except ignoring as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r}){detail}")
        time.sleep(interval)


def asgi_get_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """The scope an ASGI server hands the application for `GET path` from a loopback client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }
