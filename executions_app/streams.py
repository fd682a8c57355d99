"""The execution stream pool: async executions run on threads, each blocked on one executor's NDJSON stream.

A running execution costs the control plane almost nothing but waiting: the code runs in the sandbox and the
control plane reads its event stream (a Unix socket, or the cluster's API server). Giving each execution a
whole worker process, as a task queue does, let one tenant with a handful of long runs take every worker and
stall everyone else's work. Here one process (`manage.py run_executions`, started by `run_worker`) holds up
to SANDBOX_EXECUTION_STREAMS streams at once, one thread each.

What stays as it was with one execution per task:
- the claim is `execution_run`'s conditional UPDATE pending -> running, so with several pool processes
  (several hosts) each execution still runs exactly once;
- the lease of every execution of this process is renewed by one thread (ExecutionLease); when the process
  dies, renewals stop and `execution_expire_leases` (run by the next pool process at start, the worker's
  schedule, and every worker spawn) ends its executions `crashed`;
- output is persisted in batches, then broadcast; cancel goes to the sandbox's executor as before.

How the pool learns about new work: the rows themselves are the queue (status `pending`, oldest first,
round-robin across owners). The pool polls for them every SANDBOX_EXECUTION_POLL_MS; with REDIS_URL set, a
publish after each submit's commit wakes every pool at once, and the poll is only a backstop for a lost
message. No broker message can be lost or run twice because none carries the work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from executions_app.models import Execution, ExecutionStatus
from executions_app.services import execution_cancel, execution_expire_leases, execution_run

logger = logging.getLogger(__name__)

WAKE_CHANNEL = "sandbox:executions:pending"
# With a Redis wake-up the poll is a backstop only: look at the table this often.
REDIS_BACKSTOP_POLL = 1.0


def notify_pending() -> None:
    """Tell every pool that a pending execution was committed (Redis only; without it the pools poll)."""
    if not settings.REDIS_URL:
        return
    try:
        _redis().publish(WAKE_CHANNEL, b"1")
    except Exception:  # the poll finds the execution anyway, a little later
        logger.warning("could not publish the execution wake-up; the pool's poll picks it up", exc_info=True)


_redis_client: Any = None
_redis_lock = threading.Lock()


def _redis() -> Any:
    global _redis_client
    with _redis_lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
            )
        return _redis_client


def pending_fairly(limit: int, exclude: set[str]) -> list[str]:
    """Up to `limit` pending execution ids, oldest first but taking turns between owners.

    Per-owner caps bound how much one owner can have pending; taking turns keeps one owner's burst from
    going first when the pool is full and several owners wait.
    """
    rows = (
        Execution.objects.filter(status=ExecutionStatus.PENDING)
        .order_by("created_at", "id")
        .values_list("id", "session__owner_id")[: limit * 4 + len(exclude)]
    )
    by_owner: OrderedDict[Any, list[str]] = OrderedDict()
    for execution_id, owner_id in rows:
        if execution_id not in exclude:
            by_owner.setdefault(owner_id, []).append(execution_id)
    chosen: list[str] = []
    while by_owner and len(chosen) < limit:
        for owner_id in list(by_owner):
            chosen.append(by_owner[owner_id].pop(0))
            if not by_owner[owner_id]:
                del by_owner[owner_id]
            if len(chosen) >= limit:
                break
    return chosen


class ExecutionStreamPool:
    """Claims pending executions and streams each on a thread of its own, up to `size` at once."""

    def __init__(self, *, size: int | None = None, poll: float | None = None) -> None:
        self.size = size or settings.SANDBOX_EXECUTION_STREAMS
        self.poll = poll or settings.SANDBOX_EXECUTION_POLL
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="execution-stream")

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def serve(self) -> None:
        """Run until `stop()`: crash what a dead predecessor left running, then dispatch pending work."""
        try:
            expired = execution_expire_leases()
            if expired:
                logger.info("ended %d executions of lost workers as crashed", expired)
        except Exception:
            logger.exception("lease expiry at start failed; the scheduled expiry retries")
        poll = self.poll
        if settings.REDIS_URL:
            threading.Thread(target=self._listen, name="execution-wake", daemon=True).start()
            poll = max(poll, REDIS_BACKSTOP_POLL)
        logger.info("execution stream pool ready: up to %d streams, polling every %g s", self.size, poll)
        while not self._stopping.is_set():
            try:
                self.dispatch()
            except Exception:
                logger.exception("dispatching pending executions failed; retrying")
                time.sleep(1)
            finally:
                close_old_connections()
            self._wake.wait(poll)
            self._wake.clear()

    def dispatch(self) -> int:
        """Hand pending executions to free threads; returns how many were handed over."""
        with self._lock:
            free = self.size - len(self._active)
            busy = set(self._active)
        if free <= 0:
            return 0
        chosen = pending_fairly(free, busy)
        with self._lock:
            self._active.update(chosen)
        for execution_id in chosen:
            self._threads.submit(self._stream, execution_id)
        return len(chosen)

    def _stream(self, execution_id: str) -> None:
        try:
            # Another pool may claim it first: then execution_run returns None at once.
            execution_run(execution_id, release_connection=True)
        except Exception:
            logger.exception("streaming execution %s failed", execution_id)
        finally:
            with self._lock:
                self._active.discard(execution_id)
            connection.close()  # this thread's; a pool thread holds none while it waits for work
            self._wake.set()  # a thread is free: pending work need not wait for the next poll

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                pubsub = _redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(WAKE_CHANNEL)
                while not self._stopping.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self._wake.set()
            except Exception:
                logger.warning("execution wake-up listener lost Redis; reconnecting", exc_info=True)
                time.sleep(1)

    def stop(self) -> None:
        """Stop taking work (safe from a signal handler); `serve` returns, then call `drain`."""
        self._stopping.set()
        self._wake.set()

    def drain(self, grace: float = 5.0) -> None:
        """Give running streams `grace` seconds, then cancel the rest in their sandboxes so each ends
        recorded (`cancelled`) rather than lost."""
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            remaining = list(self._active)
        running = Execution.objects.filter(pk__in=remaining, status=ExecutionStatus.RUNNING)
        for execution in running.select_related("session"):
            execution_cancel(execution=execution)
        deadline = time.monotonic() + 5
        while self.active and time.monotonic() < deadline:
            time.sleep(0.1)
        close_old_connections()
