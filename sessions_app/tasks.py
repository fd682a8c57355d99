"""django-q2 entry points for sessions: take ids, call one service. All idempotent."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django_q.tasks import async_task

from sandbox_site.log_format import log_context
from sessions_app.dependencies import session_install_dependencies
from sessions_app.lifecycle import sessions_probe, sessions_sweep, sessions_sync_state
from sessions_app.models import SandboxSession
from sessions_app.services import session_provision
from sessions_app.warm_pool import warm_pool_refill


def session_provision_task(session_id: str) -> None:
    """Build the sandbox of a `creating` session; a second delivery finds it running and does nothing."""
    session = SandboxSession.objects.select_related("template").filter(pk=session_id).first()
    if session is not None:
        with log_context(session_id=session_id, owner=session.owner_id):
            session_provision(session=session)


def enqueue_session_provision(session_id: str) -> None:
    """Queue the sandbox build on the provisioning cluster: its own queue and workers, so a create never
    waits behind dependency installs, warm-pool refills or housekeeping (and executions never take
    workers at all: executions_app/streams.py)."""
    transaction.on_commit(
        lambda: async_task(
            "sessions_app.tasks.session_provision_task",
            session_id,
            task_name=f"provision {session_id}",
            cluster=settings.SANDBOX_PROVISION_CLUSTER,
        )
    )


def session_install_dependencies_task(session_id: str) -> str | None:
    """Install a session's pending dependencies; a second delivery finds them claimed and does nothing."""
    with log_context(session_id=session_id):
        session = session_install_dependencies(session_id=session_id)
    return session.dependency_install_status if session is not None else None


def enqueue_dependency_install(session_id: str) -> None:
    transaction.on_commit(
        lambda: async_task(
            "sessions_app.tasks.session_install_dependencies_task",
            session_id,
            task_name=f"install {session_id}",
        )
    )


def warm_pool_refill_task(template_id: str | None = None) -> int:
    return warm_pool_refill(template_id=template_id)


def enqueue_warm_pool_refill(template_id: str) -> None:
    transaction.on_commit(
        lambda: async_task(
            "sessions_app.tasks.warm_pool_refill_task", template_id, task_name=f"refill {template_id}"
        )
    )


def sessions_sweep_task() -> dict[str, int]:
    return sessions_sweep()


def sessions_probe_task() -> dict[str, int]:
    return sessions_probe()


def sessions_sync_state_task() -> dict[str, int]:
    return sessions_sync_state()
