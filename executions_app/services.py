"""Execution workflows: submit, run (stream from the executor and record), cancel."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from executions_app.models import Execution, ExecutionStatus
from executions_app.output import OutputRecorder, broadcast
from runtime import ExecuteRequest, ExecutionEvent, ExecutionResult, FileChange, OutputChunk, RuntimeFailure
from sandbox_site.log_format import log_context
from sandbox_site.metrics import record
from sessions_app.models import InvalidTransition, SandboxSession, SessionStatus
from sessions_app.sandboxes import handle_for, runtime_for

logger = logging.getLogger(__name__)
# Activity within this long of the last recorded activity is not written again: back-to-back executions
# would otherwise update the session's row on every submit for a clock kept to the second.
TOUCH_RESOLUTION = timedelta(seconds=1)


def worker_id() -> str:
    # Computed per call: django-q2 forks workers after this module may have been imported.
    return f"{socket.gethostname()}:{os.getpid()}"


class ExecutionError(Exception):
    """An execution request that cannot be honoured; `code` is the API's machine-readable error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def execution_submit(
    *,
    session: SandboxSession,
    language: str,
    code: str,
    event: Any = None,
    timeout: int = 30,
    entrypoint: str = "",
    run_here: bool = False,
) -> Execution:
    """Record a pending execution on a running session and refresh the session's idle clock.

    Refused (`quota_exceeded`) when the owner already has SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER
    executions pending or running, async and sync alike: the stream pool is shared by every tenant.
    With `run_here` (a sync request that runs it in its own thread at once) the row is recorded already
    claimed, `running` with this worker's lease, for `execution_run_here`: no second write to claim it.
    """
    if session.status != SessionStatus.RUNNING:
        raise ExecutionError(
            "session_not_running",
            f"session {session.client_id} is {session.status}; executions need a running session",
        )
    with transaction.atomic():
        # The owner's row lock serialises one owner's submits (SQLite's IMMEDIATE transactions serialise all
        # writers), so concurrent requests cannot all take the last slot.
        list(get_user_model().objects.select_for_update().filter(pk=session.owner_id).values_list("pk"))
        in_flight = Execution.objects.unfinished().filter(session__owner_id=session.owner_id).count()
        limit = settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER
        if in_flight >= limit:
            raise ExecutionError(
                "quota_exceeded",
                f"you have {in_flight} executions pending or running; the limit is {limit} at a time",
            )
        claim: dict[str, Any] = {}
        if run_here:
            now = timezone.now()
            claim = {
                "status": ExecutionStatus.RUNNING,
                "started_at": now,
                "worker": worker_id(),
                "lease_expires_at": now + timedelta(seconds=settings.SANDBOX_EXECUTION_LEASE),
            }
        execution = Execution.objects.create(
            session=session,
            language=language,
            code=code,
            event=event if event is not None else {},
            timeout=timeout,
            entrypoint=entrypoint or "",
            **claim,
        )
        if timezone.now() - session.last_activity_at >= TOUCH_RESOLUTION:
            session.touch()  # in the same commit: one durable write, not two
    return execution


def execution_start(
    *,
    session: SandboxSession,
    language: str,
    code: str,
    event: Any = None,
    timeout: int = 30,
    entrypoint: str = "",
) -> Execution:
    """Submit an execution and hand it to the stream pool once the submit commits.

    The one way the API and the console start an asynchronous execution. The hand-over waits for the
    commit (`transaction.on_commit`): a pool that woke earlier would not find the pending row.
    """
    from executions_app.tasks import enqueue_execution_run  # tasks imports this module

    with transaction.atomic():
        execution = execution_submit(
            session=session, language=language, code=code, event=event, timeout=timeout, entrypoint=entrypoint
        )
        enqueue_execution_run(execution.id)
    return execution


def execution_run(execution_id: str, *, release_connection: bool = False) -> Execution | None:
    """Run a pending execution to its end and record everything. Safe to call twice: only one claim wins.

    The claim is a conditional UPDATE pending -> running, so two workers handed the same task never both
    run it. Output is stored in seq-numbered batches while it streams; the result row is written last.
    With `release_connection` (the stream pool's threads) the thread's database connection is closed
    while it waits on the stream and after each output write: hundreds of mostly silent streams must not
    hold hundreds of database connections.
    """
    now = timezone.now()
    claimed = Execution.objects.filter(pk=execution_id, status=ExecutionStatus.PENDING).update(
        status=ExecutionStatus.RUNNING,
        started_at=now,
        worker=worker_id(),
        lease_expires_at=now + timedelta(seconds=settings.SANDBOX_EXECUTION_LEASE),
    )
    if claimed != 1:
        return None
    with ExecutionLease(execution_id):
        execution = Execution.objects.select_related("session").get(pk=execution_id)
        with log_context(
            session_id=execution.session_id, execution_id=execution_id, owner=execution.session.owner_id
        ):
            return _run_claimed(execution, release_connection)


def execution_run_here(
    execution: Execution,
    *,
    on_event: Callable[[ExecutionEvent], None] | None = None,
    release_connection: bool = False,
) -> Execution:
    """Run an execution submitted with `run_here` (so already claimed by this worker) to its end.

    `on_event` sees every event of the executor's stream as it arrives, before it is recorded: callers that
    relay live output (the E2B surface) need it without waiting for the batched writes. `release_connection`
    as for `execution_run`: a thread of its own that may wait long on a stream holds no database connection.
    """
    with (
        ExecutionLease(execution.id),
        log_context(
            session_id=execution.session_id, execution_id=execution.id, owner=execution.session.owner_id
        ),
    ):
        # Recorded running from its first commit, so nobody can have watched it while pending: a websocket
        # opened now reads the status from the row, and a "running" broadcast would reach no one.
        return _run_claimed(execution, release_connection, on_event=on_event, announce_start=False)


def _run_claimed(
    execution: Execution,
    release_connection: bool = False,
    on_event: Callable[[ExecutionEvent], None] | None = None,
    announce_start: bool = True,
) -> Execution:
    session = execution.session
    if announce_start:
        broadcast(execution.id, {"event": "status", "status": execution.status})
    handle = handle_for(session)
    if session.status != SessionStatus.RUNNING or handle is None:
        return _finish(
            execution,
            ExecutionStatus.CANCELLED,
            error_message=f"session {session.client_id} is {session.status}; the execution did not start",
        )
    recorder = OutputRecorder(execution.id, release_connection=release_connection)
    request = ExecuteRequest(
        execution_id=execution.id,
        language=execution.language,
        code=execution.code,
        event=execution.event,
        timeout=execution.timeout,
        env={str(k): str(v) for k, v in session.env_vars.items()},
        entrypoint=execution.entrypoint or None,
    )
    result: ExecutionResult | None = None
    failure = ""
    if release_connection and not connection.in_atomic_block:
        connection.close()
    try:
        for event in runtime_for(session).execute(handle, request):
            if on_event is not None:
                on_event(event)
            if isinstance(event, OutputChunk):
                recorder.add(event.stream, event.data)
            elif isinstance(event, ExecutionResult):
                result = event
    except RuntimeFailure as exc:
        failure = exc.message
    recorder.flush()
    if timezone.now() - session.last_activity_at >= TOUCH_RESOLUTION:
        session.touch()  # a short run was already counted as activity when it was submitted
    if result is None:
        session.refresh_from_db(fields=["status"])
        if session.status != SessionStatus.RUNNING:
            return _finish(
                execution,
                ExecutionStatus.CANCELLED,
                recorder,
                error_message=f"session ended ({session.status})",
            )
        return _finish(
            execution,
            ExecutionStatus.CRASHED,
            recorder,
            error_message=f"lost the sandbox's executor: {failure}",
        )
    metrics = result.metrics
    return _finish(
        execution,
        ExecutionStatus(result.status),
        recorder,
        exit_code=result.exit_code,
        return_value=result.return_value,
        error_message=result.error or "",
        stdout_truncated=metrics.stdout_truncated,
        stderr_truncated=metrics.stderr_truncated,
        metrics={
            "duration_ms": metrics.duration_ms,
            "cpu_time_ms": metrics.cpu_time_ms,
            "peak_memory_mb": metrics.peak_memory_mb,
        },
        artifacts=_artifacts(result.files),
    )


class ExecutionLease:
    """Keeps a running execution's lease (and its session's idle clock) fresh while this process runs it.

    One background thread per process renews every registered execution every third of the lease, in one
    UPDATE. If the process dies, renewals stop and `execution_expire_leases` ends the execution `crashed`; a
    long silent execution keeps its lease because renewal does not depend on output arriving.
    """

    _lock = threading.Lock()
    _running: set[str] = set()
    _thread_pid = 0

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id

    def __enter__(self) -> ExecutionLease:
        cls = type(self)
        with cls._lock:
            cls._running.add(self.execution_id)
            # django-q2 forks workers: a thread started in the parent does not exist in the child.
            if cls._thread_pid != os.getpid():
                cls._thread_pid = os.getpid()
                threading.Thread(target=cls._renew_forever, name="execution-leases", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with type(self)._lock:
            type(self)._running.discard(self.execution_id)

    @classmethod
    def _renew_forever(cls) -> None:
        while True:
            lease = settings.SANDBOX_EXECUTION_LEASE
            time.sleep(lease / 3)
            with cls._lock:
                ids = list(cls._running)
            if not ids:
                continue
            try:
                cls._renew(ids, lease)
                close_old_connections()
            except Exception:
                # Whatever fails (the database gone, a dropped connection), this thread must live on: when
                # it dies, every running execution of the process loses its lease.
                logger.exception("lease renewal failed; the next round retries")
                with contextlib.suppress(Exception):
                    close_old_connections()

    @staticmethod
    def _renew(ids: list[str], lease: int) -> None:
        now = timezone.now()
        Execution.objects.filter(pk__in=ids, status=ExecutionStatus.RUNNING).update(
            lease_expires_at=now + timedelta(seconds=lease)
        )
        sessions = SandboxSession.objects.filter(
            executions__pk__in=ids, status=SessionStatus.RUNNING
        ).distinct()
        for session in sessions:
            session.touch()


def execution_expire_leases(*, now=None, batch: int | None = None) -> int:
    """End `crashed` every running execution whose lease lapsed: its worker died without finishing it."""
    now = now or timezone.now()
    expired = 0
    limit = batch or settings.SANDBOX_SWEEP_BATCH
    lapsed = list(
        Execution.objects.lease_lapsed(now).select_related("session").order_by("lease_expires_at")[:limit]
    )
    # A worker on this host that no longer exists cannot renew anything: no need to wait for its lease.
    local = Execution.objects.filter(
        status=ExecutionStatus.RUNNING, worker__startswith=f"{socket.gethostname()}:"
    )
    lapsed += [
        e for e in local.select_related("session")[:limit] if not _worker_alive(e.worker) and e not in lapsed
    ]
    for execution in lapsed:
        try:
            execution.transition(
                ExecutionStatus.CRASHED,
                error_message=f"the worker running this execution ({execution.worker or 'unknown'}) was lost",
            )
        except InvalidTransition:
            continue
        expired += 1
        handle = handle_for(execution.session)
        if handle is not None and execution.session.status == SessionStatus.RUNNING:
            # Its process may still run in the sandbox; nobody is reading its output any more.
            try:
                runtime_for(execution.session).executor(handle).cancel(execution.id)
            except RuntimeFailure:
                pass
        broadcast(execution.id, {"event": "result", "status": execution.status, "exit_code": None})
    record.sweep({"leases_expired": expired})
    return expired


def _worker_alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's worker: only its lease can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _artifacts(files: tuple[FileChange, ...]) -> list[dict[str, Any]]:
    """The execution's changed files as stored and served: [{path, size, change}], in the executor's order
    (created, modified, deleted, each by path); a deleted file has no size."""
    return [{"path": f.path, "size": f.size, "change": f.change} for f in files]


def _finish(
    execution: Execution, status: str, recorder: OutputRecorder | None = None, **fields: Any
) -> Execution:
    if recorder is not None:
        fields["stdout"] = recorder.text("stdout")
        fields["stderr"] = recorder.text("stderr")
    # One conditional UPDATE, in autocommit: a transaction around it would only add two round trips.
    try:
        execution.transition(status, **fields)
    except InvalidTransition:
        # Cancelled (or expired) by someone else meanwhile: keep their status, store the output anyway.
        Execution.objects.filter(pk=execution.pk).update(
            **{k: v for k, v in fields.items() if k in ("stdout", "stderr", "metrics")}
        )
        execution.refresh_from_db()
    final = {"event": "result", "status": execution.status, "exit_code": execution.exit_code}
    # After the caller's commit when it holds a transaction, else now.
    transaction.on_commit(lambda: broadcast(execution.id, final))
    record.execution_finished(execution)
    return execution


def execution_cancel(*, execution: Execution) -> Execution:
    """Cancel a pending or running execution. Finished executions are returned unchanged."""
    if execution.status == ExecutionStatus.PENDING:
        try:
            execution.transition(ExecutionStatus.CANCELLED, error_message="cancelled before it started")
            return execution
        except InvalidTransition:
            execution.refresh_from_db()
    if execution.status == ExecutionStatus.RUNNING:
        session = execution.session
        handle = handle_for(session)
        if handle is not None:
            try:
                runtime_for(session).executor(handle).cancel(execution.id)
            except RuntimeFailure as exc:
                logger.warning("cancel of %s could not reach the executor: %s", execution.id, exc.message)
    return execution
