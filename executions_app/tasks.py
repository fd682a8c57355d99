"""django-q2 entry points for executions: take ids, call one service."""

from __future__ import annotations

from django.db import transaction
from django_q.tasks import async_task

from executions_app.services import execution_run


def execution_run_task(execution_id: str) -> None:
    """Run one execution in a worker. Idempotent: a second delivery finds it claimed and does nothing."""
    execution_run(execution_id)


def enqueue_execution_run(execution_id: str) -> None:
    """Queue the run after the surrounding transaction commits, so the worker always finds the row."""
    transaction.on_commit(
        lambda: async_task(
            "executions_app.tasks.execution_run_task", execution_id, task_name=f"execution {execution_id}"
        )
    )


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
