"""Waiting for a new sandbox's executor to answer /health: one loop for the client and every backend.

A backend passes its own `alive` check (has the supervisor exited, has the container stopped?), so a
sandbox that died at start fails at once with the backend's reason instead of after the whole timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.base import RuntimeFailure

if TYPE_CHECKING:
    from runtime.client import ExecutorClient

# Until the socket exists, a stat every few ms costs next to nothing and answers the moment the executor
# listens; once it exists but does not answer yet, health calls back off up to MAX_PAUSE.
STAT_PAUSE = 0.003
FIRST_PAUSE = 0.005
MAX_PAUSE = 0.1


def wait_healthy(
    client: ExecutorClient,
    timeout: float,
    *,
    alive: Callable[[], None] | None = None,
    alive_every: float = 0.0,
    what: str = "",
) -> dict[str, Any]:
    """Poll `client.health()` until it answers; return its answer.

    `alive()` raises RuntimeFailure when the sandbox can no longer become healthy; it runs every
    `alive_every` seconds, the first time after that long (an engine round trip need not run on every
    poll). A permanent failure (a wrong token) stops at once; otherwise RuntimeFailure names `what`
    (default: the executor's address) and the last error once `timeout` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    next_alive = time.monotonic() + alive_every
    pause = FIRST_PAUSE
    unix = client.endpoint.startswith("/")
    last = ""
    while True:
        now = time.monotonic()
        if alive is not None and now >= next_alive:
            alive()
            next_alive = now + alive_every
        if unix and not os.path.exists(client.endpoint):
            wait, last = STAT_PAUSE, "its socket does not exist"
        else:
            try:
                return client.health()
            except RuntimeFailure as exc:
                if exc.permanent:
                    raise
                last = exc.message
            wait, pause = pause, min(pause * 2, MAX_PAUSE)
        if time.monotonic() + wait > deadline:
            raise RuntimeFailure(
                f"{what or f'executor at {client.endpoint}'} did not become healthy within {timeout:g} s"
                + (f": {last}" if last else "")
            )
        time.sleep(wait)
