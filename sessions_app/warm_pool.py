"""Warm pools: sandboxes started ahead of demand, per template, and claimed by new sessions.

This is the product's template-affinity scheduling: a new session goes first to a ready sandbox of its
template and only then to a cold start.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runtime import Resources, RuntimeFailure, SandboxHandle, SandboxSpec
from sessions_app.models import InvalidTransition, SandboxSession, WarmSandbox, WarmSandboxStatus
from sessions_app.sandboxes import runtime_named
from templates_app.models import SandboxTemplate

logger = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 3


def warm_handle(warm: WarmSandbox) -> SandboxHandle:
    return SandboxHandle(
        backend=warm.runtime_type,
        sandbox_id=warm.container_id,
        session_id=warm.id,
        endpoint=warm.executor_endpoint,
        token=warm.executor_token,
        node=warm.runtime_node,
        workspace_path=warm.workspace_path,
    )


def warm_resources(template: SandboxTemplate) -> Resources:
    """The limits a warm sandbox of `template` is built with: the template's defaults."""
    return Resources(
        cpu=float(template.default_cpu_cores),
        memory_mb=template.default_memory_mb,
        disk_mb=template.default_disk_mb,
    )


def session_resources(session: SandboxSession) -> Resources:
    return Resources(
        cpu=float(session.cpu),
        memory_mb=session.memory_mb,
        disk_mb=session.disk_mb,
        max_processes=session.max_processes,
    )


def session_claim_warm(*, session: SandboxSession) -> bool:
    """Hand a ready warm sandbox of the session's template to this `creating` session. True if it got one.

    The claim is a conditional DELETE of the ready row, so of two concurrent creates exactly one wins the
    sandbox; the loser tries the next one and, when none is left, cold-starts. On a backend that cannot
    resize a live sandbox (kubernetes) only a session asking for exactly the template's default resources
    claims one; any other cold-starts.
    """
    runtime = runtime_named(session.runtime_type)
    wanted = session_resources(session)
    if not runtime.resizes_live and wanted != warm_resources(session.template):
        return False
    for _ in range(CLAIM_ATTEMPTS):
        warm = (
            WarmSandbox.objects.ready()
            .filter(template_id=session.template_id, runtime_type=session.runtime_type)
            .order_by("created_at")
            .first()
        )
        if warm is None:
            return False
        deleted, _ = WarmSandbox.objects.filter(pk=warm.pk, status=WarmSandboxStatus.READY).delete()
        if deleted != 1:
            continue
        handle = warm_handle(warm)
        try:
            if runtime.resizes_live:
                runtime.update_resources(handle, wanted)
            session.mark_running(
                container_id=warm.container_id,
                executor_endpoint=warm.executor_endpoint,
                executor_token=warm.executor_token,
                runtime_node=warm.runtime_node,
                workspace_path=warm.workspace_path,
            )
        except (RuntimeFailure, InvalidTransition) as exc:
            logger.warning("warm sandbox %s could not serve session %s: %s", warm.id, session.id, exc)
            _destroy_quietly(runtime, handle)
            if isinstance(exc, InvalidTransition):
                return True  # the session ended meanwhile; nothing more to do for it
            continue
        return True
    return False


def warm_pool_reserve(template: SandboxTemplate) -> list[str]:
    """Add provisioning rows up to the template's pool size; return their ids (the caller builds them).

    Reserving under a lock on the template row keeps two refills from overfilling the pool.
    """
    runtime_type = template.backend()
    with transaction.atomic():
        locked = SandboxTemplate.objects.select_for_update().get(pk=template.pk)
        # No session can claim a sandbox of a template whose language runtime is missing: none is built.
        usable = locked.is_active and not locked.language_runtime_refusal()
        size = locked.warm_pool_size if usable else 0
        have = WarmSandbox.objects.filter(template=locked, runtime_type=runtime_type).count()
        new = [
            WarmSandbox(template=locked, runtime_type=runtime_type, executor_token=secrets.token_urlsafe(32))
            for _ in range(max(0, size - have))
        ]
        WarmSandbox.objects.bulk_create(new)
    return [warm.id for warm in new]


def warm_sandbox_build(*, warm_id: str) -> bool:
    """Start the sandbox of one reserved warm row and mark it ready; on failure drop the row."""
    warm = WarmSandbox.objects.select_related("template").filter(pk=warm_id).first()
    if warm is None or warm.status != WarmSandboxStatus.PROVISIONING:
        return False
    template = warm.template
    runtime = runtime_named(warm.runtime_type)
    spec = SandboxSpec(
        session_id=warm.id,
        image=template.image_url,
        token=warm.executor_token,
        resources=warm_resources(template),
        env={str(k): str(v) for k, v in template.default_env_vars.items()},
        labels={"sandbox.managed": "true", "sandbox.warm": "true", "sandbox.template": template.id},
    )
    try:
        handle = runtime.create(spec)
    except RuntimeFailure as exc:
        logger.warning("warm sandbox for %s failed to start: %s", template.id, exc.message)
        WarmSandbox.objects.filter(pk=warm.pk).delete()
        return False
    updated = WarmSandbox.objects.filter(pk=warm.pk, status=WarmSandboxStatus.PROVISIONING).update(
        status=WarmSandboxStatus.READY,
        container_id=handle.sandbox_id,
        executor_endpoint=handle.endpoint,
        runtime_node=handle.node,
        workspace_path=handle.workspace_path,
        ready_at=timezone.now(),
    )
    if updated != 1:
        # The row was dropped meanwhile (pool shrunk, template deleted): the sandbox must not linger.
        _destroy_quietly(runtime, handle)
        return False
    return True


def warm_pool_refill(*, template_id: str | None = None) -> int:
    """Bring every pool (or one template's) to its size; shrink pools that are too big. Returns sandboxes started."""
    templates = SandboxTemplate.objects.all()
    if template_id is not None:
        templates = templates.filter(pk=template_id)
    started = 0
    for template in templates:
        warm_pool_trim(template)
        for warm_id in warm_pool_reserve(template):
            started += warm_sandbox_build(warm_id=warm_id)
    return started


def warm_pool_trim(template: SandboxTemplate) -> None:
    """Destroy ready sandboxes beyond the template's pool size (or all, when it is inactive)."""
    size = template.warm_pool_size if template.is_active else 0
    ready = list(WarmSandbox.objects.ready().filter(template=template).order_by("-created_at"))
    for warm in ready[size:] if len(ready) > size else []:
        if WarmSandbox.objects.filter(pk=warm.pk, status=WarmSandboxStatus.READY).delete()[0] == 1:
            _destroy_quietly(runtime_named(warm.runtime_type), warm_handle(warm))


def warm_pool_drop_stuck() -> int:
    """Forget warm rows stuck provisioning past the creating timeout (their worker died)."""
    before = timezone.now() - timedelta(seconds=settings.SANDBOX_CREATING_TIMEOUT)
    dropped = 0
    for warm in WarmSandbox.objects.filter(status=WarmSandboxStatus.PROVISIONING, created_at__lte=before):
        if WarmSandbox.objects.filter(pk=warm.pk, status=WarmSandboxStatus.PROVISIONING).delete()[0] == 1:
            dropped += 1
    return dropped


def _destroy_quietly(runtime, handle: SandboxHandle) -> None:
    try:
        runtime.destroy(handle)
    except Exception:
        logger.exception("could not destroy warm sandbox %s", handle.sandbox_id)
