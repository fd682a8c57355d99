"""Self-healing sweeps run by the workers: idle and lifetime cleanup, stuck creates, health probes, state sync.

Each sweep works in bounded batches over indexed columns and is idempotent: two workers running the same
sweep at once only race on conditional status updates, which one of them wins.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from runtime import RuntimeFailure
from sandbox_site.metrics import record
from sessions_app.models import SandboxSession, SessionStatus, SessionUsageSample, WarmSandbox
from sessions_app.sandboxes import handle_for, runtime_for, runtime_named
from sessions_app.services import session_end
from sessions_app.warm_pool import warm_pool_drop_stuck

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0


def sessions_sweep(*, now: Any = None) -> dict[str, int]:
    """End idle sessions, sessions past their lifetime, and sessions stuck in `creating`."""
    now = now or timezone.now()
    batch = settings.SANDBOX_SWEEP_BATCH
    counts = {"idle": 0, "lifetime": 0, "stuck_creating": 0}
    for session in (
        SandboxSession.objects.idle_since(now).select_related("template").order_by("idle_deadline_at")[:batch]
    ):
        session_end(session=session, status=SessionStatus.TERMINATED, reason="idle_timeout")
        counts["idle"] += 1
    for session in (
        SandboxSession.objects.past_lifetime(now).select_related("template").order_by("expires_at")[:batch]
    ):
        session_end(session=session, status=SessionStatus.TIMEOUT, reason="lifetime_exceeded")
        counts["lifetime"] += 1
    stuck_before = now - timedelta(seconds=settings.SANDBOX_CREATING_TIMEOUT)
    for session in SandboxSession.objects.stuck_creating(stuck_before).order_by("created_at")[:batch]:
        session_end(
            session=session,
            status=SessionStatus.FAILED,
            reason="provisioning_timeout",
            detail=f"the sandbox was not ready within {settings.SANDBOX_CREATING_TIMEOUT} s",
        )
        counts["stuck_creating"] += 1
    warm_pool_drop_stuck()
    record.sweep({"idle_timeout": counts["idle"], "lifetime_exceeded": counts["lifetime"]})
    record.sweep({"provisioning_timeout": counts["stuck_creating"]})
    return counts


def _answers(runtime: Any, handle: Any) -> bool:
    """Whether the sandbox's executor answers /health. A backend's status can lag behind a sandbox that has
    just started (the API server reports a pod Pending for a moment after its executor answers), so a
    sandbox reported stopped is lost only when its executor does not answer either."""
    try:
        runtime.executor(handle).health()
    except RuntimeFailure:
        return False
    return True


def _lose(session: SandboxSession, detail: str) -> None:
    session_end(session=session, status=SessionStatus.FAILED, reason="container_lost", detail=detail)


def sessions_probe(*, limit: int | None = None) -> dict[str, int]:
    """Ask each running session's executor for /health; after N failures in a row the session is lost.

    Usage (CPU, memory) is stored on the session where the runtime can tell, and kept as a bounded series of
    samples (SessionUsageSample) the console draws over time.
    """
    counts = {"healthy": 0, "unhealthy": 0, "lost": 0}
    sessions = SandboxSession.objects.filter(status=SessionStatus.RUNNING).order_by("usage_updated_at", "id")
    for session in sessions[: limit or settings.SANDBOX_SWEEP_BATCH]:
        handle = handle_for(session)
        runtime = runtime_for(session)
        healthy = False
        usage: dict[str, Any] = {}
        if handle is not None:
            try:
                runtime.executor(handle).health()
                healthy = True
                state = runtime.inspect(handle)
                usage = {"cpu_usage_percent": state.cpu_percent, "memory_usage_mb": state.memory_mb}
            except RuntimeFailure as exc:
                logger.info("health probe of %s failed: %s", session.id, exc.message)
        now = timezone.now()
        if healthy:
            SandboxSession.objects.filter(pk=session.pk).update(
                probe_failures=0, usage_updated_at=now, **usage
            )
            SessionUsageSample.objects.record(
                session_id=session.pk,
                cpu_percent=usage.get("cpu_usage_percent"),
                memory_mb=usage.get("memory_usage_mb"),
                at=now,
            )
            counts["healthy"] += 1
            continue
        failures = session.probe_failures + 1
        record.probe_failure(runtime=session.runtime_type)
        SandboxSession.objects.filter(pk=session.pk).update(probe_failures=failures, usage_updated_at=now)
        counts["unhealthy"] += 1
        if failures >= settings.SANDBOX_HEALTH_FAILURES:
            _lose(session, f"the sandbox did not answer {failures} health probes in a row")
            counts["lost"] += 1
    record.sweep({"container_lost": counts["lost"]})
    return counts


def sessions_sync_state() -> dict[str, int]:
    """Reconcile the runtimes with the database: nothing runs unaccounted for, nothing live is a ghost.

    A managed sandbox that no live session, `creating` session or warm row accounts for is destroyed; a
    running session whose sandbox is gone is failed (`container_lost`).
    """
    counts = {"orphans_destroyed": 0, "sessions_lost": 0}
    backends = {settings.SANDBOX_RUNTIME} | set(
        SandboxSession.objects.live()
        .exclude(runtime_type="")
        .values_list("runtime_type", flat=True)
        .distinct()
    )
    for backend in sorted(backends):
        try:
            runtime = runtime_named(backend)
            managed = runtime.list_managed()
        except RuntimeFailure as exc:
            logger.warning("state sync skipped the %s runtime: %s", backend, exc.message)
            continue
        live = SandboxSession.objects.live().filter(runtime_type=backend)
        owners = set(live.values_list("id", flat=True)) | set(
            WarmSandbox.objects.values_list("id", flat=True)
        )
        owned_sandboxes = set(live.exclude(container_id="").values_list("container_id", flat=True)) | set(
            WarmSandbox.objects.exclude(container_id="").values_list("container_id", flat=True)
        )
        for handle in managed:
            if handle.session_id in owners or handle.sandbox_id in owned_sandboxes:
                continue
            # A create in flight has its session (or warm row) already; anything else is an orphan.
            logger.warning("state sync: destroying sandbox %s that no live session owns", handle.sandbox_id)
            try:
                runtime.destroy(handle)
                counts["orphans_destroyed"] += 1
            except RuntimeFailure as exc:
                logger.warning("could not destroy orphan %s: %s", handle.sandbox_id, exc.message)
        present = {handle.sandbox_id for handle in managed}
        for session in live.filter(status=SessionStatus.RUNNING).exclude(container_id__in=present):
            stored = handle_for(session)
            state = runtime.inspect(stored) if stored is not None else None
            if state is not None and state.exists and state.running:
                continue
            _lose(session, "the sandbox disappeared behind the control plane's back")
            counts["sessions_lost"] += 1
        for session in live.filter(status=SessionStatus.RUNNING, container_id__in=present):
            stored = handle_for(session)
            if stored is None:
                continue
            state = runtime.inspect(stored)
            if not state.running and not _answers(runtime, stored):
                _lose(session, f"the sandbox stopped: {state.detail}")
                counts["sessions_lost"] += 1
    record.sweep(counts)
    return counts
