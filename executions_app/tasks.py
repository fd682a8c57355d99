"""Entry points for executions: hand-over to the stream pool, and django-q2 tasks. Take ids, call one service."""

from __future__ import annotations

from django.db import transaction
from django_q.conf import Conf

from executions_app.services import execution_run


def execution_run_task(execution_id: str) -> None:
    """Run one execution in a worker. Idempotent: a second delivery finds it claimed and does nothing.

    Executions are normally streamed by the stream pool (executions_app/streams.py), not by a task; this
    stays for work queued before an upgrade.
    """
    execution_run(execution_id)


def enqueue_execution_run(execution_id: str) -> None:
    """Hand the execution to the stream pool once the surrounding transaction commits.

    The pending row is the queue entry (the pool finds it); with Redis a publish wakes the pools at once.
    With django-q2's sync mode (tests' `inline_worker`), the run happens right here after the commit, as
    every queued task then does.
    """
    transaction.on_commit(lambda: _hand_over(execution_id))


def _hand_over(execution_id: str) -> None:
    if Conf.SYNC:
        execution_run(execution_id)
        return
    from executions_app.streams import notify_pending

    notify_pending()


def execution_expire_leases_task() -> int:
    """End `crashed` the running executions whose worker stopped renewing their lease."""
    from executions_app.services import execution_expire_leases

    return execution_expire_leases()


def on_worker_spawn(sender, proc_name: str = "", **kwargs) -> None:
    """A django-q2 worker process started (also after one was killed): crash what dead workers left running."""
    from django.db import close_old_connections

    from executions_app.services import execution_expire_leases

    try:
        execution_expire_leases()
    finally:
        close_old_connections()
