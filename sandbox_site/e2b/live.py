"""One execution run for a live E2B answer: recorded like every execution (the API and the console see it),
its output relayed as it arrives, and cancelled in the sandbox when the client stops listening."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connection

from executions_app.models import Execution, ExecutionStatus
from executions_app.services import execution_run_here, execution_submit
from runtime import ExecutionEvent, OutputChunk, RuntimeFailure
from sandbox_site.e2b.streaming import Relay
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for, runtime_for

logger = logging.getLogger(__name__)

MAX_TIMEOUT = 3600


def submit(
    *,
    session: SandboxSession,
    language: str,
    code: str,
    timeout: int,
    event: object = None,
    entrypoint: str = "",
) -> Execution:
    """Record the execution, already claimed by this thread (ExecutionError when it may not run)."""
    return execution_submit(
        session=session,
        language=language,
        code=code,
        event=event,
        timeout=max(1, min(MAX_TIMEOUT, timeout)),
        entrypoint=entrypoint,
        run_here=True,
    )


def run(execution: Execution, relay: Relay, on_output: Callable[[str, str], None]) -> Execution:
    """Run a submitted execution to its end, passing each output chunk to `on_output(stream, text)`."""
    watcher = threading.Thread(
        target=_cancel_when_abandoned, args=(relay, execution), name=f"e2b-watch-{execution.id}", daemon=True
    )
    watcher.start()

    def on_event(event: ExecutionEvent) -> None:
        if isinstance(event, OutputChunk):
            on_output(event.stream, event.data)

    # Commands can run for an hour: the thread gives its database connection back while it waits.
    return execution_run_here(execution, on_event=on_event, release_connection=True)


def _cancel_when_abandoned(relay: Relay, execution: Execution) -> None:
    """Wait until the answer ends; if the client left while the execution still runs, cancel it."""
    relay.cancelled.wait()
    try:
        if Execution.objects.filter(pk=execution.pk, status=ExecutionStatus.RUNNING).exists():
            handle = handle_for(execution.session)
            if handle is not None:
                runtime_for(execution.session).executor(handle).cancel(execution.id)
    except RuntimeFailure as exc:
        logger.info("could not cancel abandoned execution %s: %s", execution.id, exc.message)
    except Exception:
        logger.exception("cancelling abandoned execution %s failed", execution.id)
    finally:
        connection.close()
