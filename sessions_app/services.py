"""Session workflows: the functions the API, console, admin, tasks and commands all call."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from runtime import Resources, RuntimeFailure, SandboxHandle, SandboxSpec
from sandbox_site.metrics import record
from sessions_app.admission import AdmissionRefused, admit_session
from sessions_app.dependencies import merge_dependencies
from sessions_app.models import DependencyInstallStatus, InvalidTransition, SandboxSession, SessionStatus
from sessions_app.sandboxes import handle_for, runtime_for
from templates_app.models import SandboxTemplate

logger = logging.getLogger(__name__)

MANAGED_LABELS = {"sandbox.managed": "true"}


class SessionError(Exception):
    """A session request that cannot be honoured; `code` is the API's machine-readable error."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Seconds after which the same request may succeed (capacity refusals), else None.
        self.retry_after = retry_after


def session_spec(session: SandboxSession) -> SandboxSpec:
    """What the runtime needs to build this session's sandbox."""
    return SandboxSpec(
        session_id=session.id,
        image=session.template.image_url,
        token=session.executor_token,
        resources=Resources(
            cpu=float(session.cpu),
            memory_mb=session.memory_mb,
            disk_mb=session.disk_mb,
            max_processes=session.max_processes,
        ),
        env={str(k): str(v) for k, v in session.env_vars.items()},
        labels={**MANAGED_LABELS, "sandbox.session": session.id, "sandbox.template": session.template_id},
    )


@transaction.atomic
def session_create(
    *,
    owner: Any,
    template: SandboxTemplate,
    session_id: str | None = None,
    cpu: str | None = None,
    memory_mb: int | None = None,
    disk_mb: int | None = None,
    timeout: int | None = None,
    env_vars: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    dependencies: list[dict[str, str]] | None = None,
    python_package_index_url: str = "",
    python_package_ca_bundle: str = "",
    max_lifetime: int | None = None,
    restore_from: str | None = None,
) -> SandboxSession:
    """Record a new session (status `creating`), copying every default from the template.

    `session_start` then gives it a sandbox: a warm one, or a provisioning task in a worker. With
    `restore_from`, the sandbox starts with the saved workspace of that ended session of the same owner.
    """
    if not template.is_active:
        raise SessionError("template_inactive", f"template {template.id!r} is deactivated")
    if refusal := template.language_runtime_refusal():
        raise SessionError("language_runtime_unavailable", refusal)
    if restore_from:
        # Client ids are per owner; the source is then recorded by its internal id, which keys its workspace.
        source = SandboxSession.objects.filter(client_id=restore_from, owner_id=owner.pk).first()
        if source is None:
            raise SessionError("restore_source_not_found", f"no session {restore_from!r} to restore from")
        if source.is_live:
            raise SessionError(
                "restore_source_live",
                f"session {restore_from} is {source.status}; its workspace is saved when it ends",
            )
    memory = memory_mb if memory_mb is not None else template.default_memory_mb
    try:
        admit_session(owner=owner, memory_mb=memory)
    except AdmissionRefused as exc:
        raise SessionError(exc.code, exc.message, retry_after=exc.retry_after) from None
    # Ids are per owner: only the owner's own sessions can collide, so nothing about another's is revealed.
    if session_id and SandboxSession.objects.filter(owner_id=owner.pk, client_id=session_id).exists():
        raise SessionError("duplicate_id", f"a session with id {session_id!r} exists already")
    now = timezone.now()
    session_timeout = timeout if timeout is not None else template.default_timeout_sec
    fields: dict[str, Any] = {
        "owner": owner,
        "template": template,
        "cpu": cpu if cpu is not None else _format_cpu(template.default_cpu_cores),
        "memory_mb": memory,
        "disk_mb": disk_mb if disk_mb is not None else template.default_disk_mb,
        "timeout": session_timeout,
        "env_vars": {**template.default_env_vars, **(env_vars or {})},
        "metadata": dict(metadata or {}),
        "requested_dependencies": list(dependencies or []),
        "dependency_install_status": "pending" if dependencies else "completed",
        "python_package_index_url": python_package_index_url,
        "python_package_ca_bundle": python_package_ca_bundle,
        "restore_from": source.pk if restore_from else "",
        "runtime_type": template.backend(),
        "executor_token": secrets.token_urlsafe(32),
        "created_at": now,
        "last_activity_at": now,
        "idle_deadline_at": now + timedelta(seconds=session_timeout),
        "max_lifetime": max_lifetime,
        "expires_at": now + timedelta(seconds=max_lifetime or settings.SANDBOX_MAX_LIFETIME),
    }
    if session_id:
        fields["client_id"] = session_id
    try:
        with transaction.atomic():
            return SandboxSession.objects.create(**fields)
    except IntegrityError:
        # Two creates of the same id raced past the check above; the unique (owner, client_id) decides.
        raise SessionError("duplicate_id", f"a session with id {session_id!r} exists already") from None


def _format_cpu(cores: Any) -> str:
    text = f"{float(cores):.2f}".rstrip("0").rstrip(".")
    return text or "0"


def session_provision(*, session: SandboxSession) -> SandboxSession:
    """Build the sandbox of a `creating` session and mark it `running`; on failure mark it `failed`.

    Idempotent: a session that is no longer `creating` is returned untouched. If the session was ended
    while its sandbox was being built, the fresh sandbox is destroyed rather than left running.
    """
    if session.status != SessionStatus.CREATING:
        return session
    runtime = runtime_for(session)
    try:
        handle = runtime.create(session_spec(session))
    except RuntimeFailure as exc:
        logger.warning("provisioning session %s failed: %s", session.id, exc.message)
        record.session_started(session, warm=False, ok=False)
        try:
            session.mark_failed("provisioning_failed", detail=exc.message)
            record.session_finished(session)
        except InvalidTransition:
            session.refresh_from_db()
        return session
    # The saved workspace goes in before the session is `running`: its first execution already sees it.
    failure = _restore_workspace(session, handle) if session.restore_from else ""
    if failure:
        runtime.destroy(handle)
        record.session_started(session, warm=False, ok=False)
        try:
            session.mark_failed("restore_failed", detail=failure)
            record.session_finished(session)
        except InvalidTransition:
            session.refresh_from_db()
        return session
    try:
        session.mark_running(
            container_id=handle.sandbox_id,
            executor_endpoint=handle.endpoint,
            runtime_node=handle.node or socket.gethostname(),
            workspace_path=handle.workspace_path,
        )
    except InvalidTransition:
        runtime.destroy(handle)
        session.refresh_from_db()
        return session
    record.session_started(session, warm=False, ok=True)
    _enqueue_pending_install(session)
    return session


def _restore_workspace(session: SandboxSession, handle: SandboxHandle) -> str:
    """Copy the saved workspace of `session.restore_from` into the new sandbox; '' or why it failed."""
    from sessions_app.workspaces import workspace_restore

    try:
        count = workspace_restore(session=session, client=runtime_for(session).executor(handle))
    except Exception as exc:  # storage or sandbox: either way the session cannot start as asked
        logger.warning("restoring %s into %s failed: %s", session.restore_from, session.id, exc)
        message = exc.message if isinstance(exc, RuntimeFailure) else f"{type(exc).__name__}: {exc}"
        return f"could not restore the workspace of {session.restore_from}: {message}"
    logger.info("restored %d files of %s into %s", count, session.restore_from, session.id)
    return ""


def _enqueue_pending_install(session: SandboxSession) -> None:
    from sessions_app import tasks

    if session.dependency_install_status == DependencyInstallStatus.PENDING:
        tasks.enqueue_dependency_install(session.id)


def session_start(*, session: SandboxSession) -> SandboxSession:
    """Give a `creating` session a sandbox: a ready warm one of its template, else a provisioning task.

    Call it after the session row is committed: the task runs in another process and must find the row.
    """
    from sessions_app import tasks
    from sessions_app.warm_pool import session_claim_warm

    if session_claim_warm(session=session):
        tasks.enqueue_warm_pool_refill(session.template_id)
        handle = handle_for(session)
        if session.status == SessionStatus.RUNNING and handle is not None:
            record.session_started(session, warm=True, ok=True)
            failure = _restore_workspace(session, handle) if session.restore_from else ""
            if failure:
                return session_end(
                    session=session, status=SessionStatus.FAILED, reason="restore_failed", detail=failure
                )
            _enqueue_pending_install(session)
        return session
    tasks.enqueue_session_provision(session.id)
    return session


def session_wait_started(*, session: SandboxSession, timeout: float) -> SandboxSession:
    """Wait up to `timeout` seconds for a `creating` session to leave that state (a worker provisions it)."""
    started = time.monotonic()
    while session.status == SessionStatus.CREATING and time.monotonic() - started < timeout:
        # A sandbox is usually ready within a second: poll tightly then (one indexed read each), gently after.
        time.sleep(0.005 if time.monotonic() - started < 2 else 0.05)
        session.refresh_from_db()
    return session


def session_open(*, owner: Any, template: SandboxTemplate, **create_arguments: Any) -> SandboxSession:
    """Create a session, start it once the row is committed, and wait until it leaves `creating`.

    The one way the API and the console open a session, with one bounded wait (SANDBOX_CREATE_WAIT): agents
    and people get a usable session back, as from E2B or Lambda, while a worker builds it. A session still
    `creating` after the wait is returned as such (poll it); one that `failed` is returned for the caller
    to report. Call it outside a transaction: the provisioning task runs in another process and must find
    the committed row. `create_arguments` are `session_create`'s.
    """
    with transaction.atomic():
        session = session_create(owner=owner, template=template, **create_arguments)
    session = session_start(session=session)
    return session_wait_started(session=session, timeout=settings.SANDBOX_CREATE_WAIT)


def session_release_sandbox(*, session: SandboxSession) -> None:
    """Destroy the session's sandbox, if it has one. Failures are logged: state sync removes leftovers."""
    handle = handle_for(session)
    if handle is None:
        return
    try:
        runtime_for(session).destroy(handle)
    except Exception:
        logger.exception("could not destroy sandbox %s of session %s", handle.sandbox_id, session.id)


def session_terminate(*, session: SandboxSession, reason: str = "user_request") -> SandboxSession:
    """End a live session and remove its sandbox. Idempotent: an ended session is returned as it is.

    The status changes first, so no new execution starts on a sandbox that is about to disappear; running
    executions are cancelled before the sandbox goes (`execution_run` records them as cancelled).
    """
    return session_end(session=session, status=SessionStatus.TERMINATED, reason=reason)


def session_end(
    *, session: SandboxSession, status: str, reason: str, detail: str = "", save_workspace: bool = True
) -> SandboxSession:
    """Move a live session to an ended `status`, cancel its running executions, save its workspace to
    storage, then remove its sandbox.

    Every ending goes through here (terminate, idle, lifetime, health and sync failures), so every ended
    session's files stay retrievable. A save that fails is logged and does not keep the sandbox alive.
    """
    if session.status not in (SessionStatus.CREATING, SessionStatus.RUNNING):
        return session
    try:
        session.transition(status, reason=reason, detail=detail)
    except InvalidTransition:
        # Someone else ended it first; their ending stands.
        session.refresh_from_db()
        return session
    record.session_finished(session)
    _cancel_running_executions(session)
    if save_workspace:
        from sessions_app.workspaces import workspace_save

        try:
            workspace_save(session=session)
        except Exception:
            logger.exception("could not save the workspace of %s", session.id)
    session_release_sandbox(session=session)
    return session


def _cancel_running_executions(session: SandboxSession) -> None:
    # Through the reverse relation: sessions_app never imports executions_app (dependency direction).
    running = list(session.executions.filter(status="running").values_list("id", flat=True))  # type: ignore[attr-defined]
    handle = handle_for(session)
    if not running or handle is None:
        return
    try:
        client = runtime_for(session).executor(handle)
        for execution_id in running:
            client.cancel(execution_id)
    except RuntimeFailure as exc:
        logger.info("could not cancel executions of %s before removing it: %s", session.id, exc.message)


def session_keepalive(*, session: SandboxSession) -> SandboxSession:
    """Reset the idle clock of a live session."""
    if session.status != SessionStatus.RUNNING:
        raise SessionError(
            "session_not_running", f"session {session.client_id} is {session.status}, not running"
        )
    session.touch()
    return session


def session_delete(*, session: SandboxSession) -> None:
    """Remove a session for good: its sandbox, its stored workspace, its row, and (by cascade) its
    executions and output. A live session's workspace is not saved first: it would be deleted at once."""
    from sessions_app.workspaces import workspace_forget

    session_end(session=session, status=SessionStatus.TERMINATED, reason="deleted", save_workspace=False)
    session_release_sandbox(session=session)
    try:
        workspace_forget(session_id=session.id)
    except Exception:
        logger.exception("could not delete the stored workspace of %s; it stays in storage", session.id)
    SandboxSession.objects.filter(pk=session.pk).delete()


def session_request_dependencies(
    *,
    session: SandboxSession,
    dependencies: list[dict[str, str]],
    index_url: str | None = None,
    ca_bundle: str | None = None,
) -> SandboxSession:
    """Merge `dependencies` into the session's requested set (by name), mark them pending and queue the
    install (sessions_app.dependencies.session_install_dependencies).

    Refused while an install runs: the result of that install would silently miss the new packages. An
    install `installing` for longer than the install timeout allows lost its worker; it no longer blocks.
    """
    from sessions_app import tasks

    if session.status != SessionStatus.RUNNING:
        raise SessionError(
            "session_not_running", f"session {session.client_id} is {session.status}, not running"
        )
    with transaction.atomic():
        locked = SandboxSession.objects.select_for_update().get(pk=session.pk)
        started = locked.dependency_install_started_at
        stale_before = timezone.now() - timedelta(seconds=settings.SANDBOX_INSTALL_TIMEOUT + 60)
        if locked.dependency_install_status == DependencyInstallStatus.INSTALLING and (
            started is None or started > stale_before
        ):
            raise SessionError(
                "install_in_progress", "a dependency install is running; try again when it ends"
            )
        locked.requested_dependencies = merge_dependencies(locked.requested_dependencies, dependencies)
        if index_url is not None:
            locked.python_package_index_url = index_url
        if ca_bundle is not None:
            locked.python_package_ca_bundle = ca_bundle
        locked.dependency_install_status = DependencyInstallStatus.PENDING
        locked.dependency_install_error = ""
        locked.save(
            update_fields=[
                "requested_dependencies",
                "python_package_index_url",
                "python_package_ca_bundle",
                "dependency_install_status",
                "dependency_install_error",
                "updated_at",
            ]
        )
        tasks.enqueue_dependency_install(locked.id)
    locked.touch()
    return locked
