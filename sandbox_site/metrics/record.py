"""Recording the product's counters and histograms: the functions the services call, where the work happens
(web processes, provisioning and default workers, the execution stream pool).

Recording is a label lookup and an increment (a few microseconds): nothing here queries or blocks, so the
request paths that call it (execute-sync) stay as fast as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.utils import timezone
from prometheus_client import Counter, Histogram

# Seconds: a warm claim takes milliseconds, a cold container or pod start seconds, a stuck one minutes.
CREATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
EXECUTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
INSTALL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

session_create_seconds = Histogram(
    "sandbox_session_create_duration_seconds",
    "Seconds from a session's creation to its sandbox running, by template and start "
    "(warm: a pool sandbox was claimed; cold: one was built for it).",
    ["template", "start"],
    buckets=CREATE_BUCKETS,
)
session_creates = Counter(
    "sandbox_session_creates",
    "Session starts by template, start (warm, cold) and result (success, failure).",
    ["template", "start", "result"],
)
sessions_finished = Counter(
    "sandbox_sessions_finished",
    "Sessions that ended, by template, final status and reason (user_request, idle_timeout, "
    "lifetime_exceeded, provisioning_failed, container_lost, ...).",
    ["template", "status", "reason"],
)
execution_seconds = Histogram(
    "sandbox_execution_duration_seconds",
    "Seconds from an execution's start to its end, by language and final status.",
    ["language", "status"],
    buckets=EXECUTION_BUCKETS,
)
execution_output_bytes = Counter(
    "sandbox_execution_output_bytes",
    "Bytes of output executions kept, by language and stream (stdout, stderr).",
    ["language", "stream"],
)
dependency_install_seconds = Histogram(
    "sandbox_dependency_install_duration_seconds",
    "Seconds a session's dependency install took, by result (completed, failed).",
    ["result"],
    buckets=INSTALL_BUCKETS,
)
probe_failures = Counter(
    "sandbox_probe_failures",
    "Health probes of running sessions that got no answer, by sandbox backend.",
    ["runtime"],
)
sweep_actions = Counter(
    "sandbox_sweep_actions",
    "What the background sweeps did, by action (idle_timeout, lifetime_exceeded, provisioning_timeout, "
    "container_lost, orphans_destroyed, sessions_lost, leases_expired).",
    ["action"],
)


def _seconds_since(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    return max(0.0, (timezone.now() - moment).total_seconds())


def session_started(session: Any, *, warm: bool, ok: bool) -> None:
    """A session got its sandbox (ok) or failed to; the latency (since the session was recorded) counts
    successful starts only."""
    start = "warm" if warm else "cold"
    session_creates.labels(session.template_id, start, "success" if ok else "failure").inc()
    if ok:
        session_create_seconds.labels(session.template_id, start).observe(_seconds_since(session.created_at))


def session_finished(session: Any) -> None:
    """A session reached an ended status (call it after the transition)."""
    sessions_finished.labels(
        session.template_id, session.status, session.termination_reason or "unknown"
    ).inc()


# Label children of the execution metrics, kept: languages, statuses and streams are few, and an execute-sync
# then pays for increments only, not label lookups.
_execution_children: dict[tuple[str, str], Any] = {}
_output_children: dict[tuple[str, str], Any] = {}


def execution_finished(execution: Any) -> None:
    """An execution reached its final status (call it after the transition, with stdout and stderr set)."""
    language = execution.language
    key = (language, execution.status)
    duration = _execution_children.get(key)
    if duration is None:
        duration = _execution_children[key] = execution_seconds.labels(*key)
    duration.observe(_seconds_since(execution.started_at))
    for stream in ("stdout", "stderr"):
        text = getattr(execution, stream) or ""
        if text:
            output = _output_children.get((language, stream))
            if output is None:
                output = _output_children[(language, stream)] = execution_output_bytes.labels(
                    language, stream
                )
            output.inc(len(text.encode("utf-8", "replace")))


def dependency_install(*, ok: bool, seconds: float) -> None:
    dependency_install_seconds.labels("completed" if ok else "failed").observe(max(0.0, seconds))


def probe_failure(*, runtime: str) -> None:
    probe_failures.labels(runtime or "default").inc()


def sweep(counts: Mapping[str, int]) -> None:
    """Add a sweep's action counts to sandbox_sweep_actions_total."""
    for action, count in counts.items():
        if count:
            sweep_actions.labels(action).inc(count)
