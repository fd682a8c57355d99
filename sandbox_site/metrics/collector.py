"""Gauges read from the database when /metrics is scraped: what exists now, not what happened.

The database is the one place that knows every process's sessions, warm sandboxes and queued tasks, so these
are exact however many web and worker processes (or hosts) there are, and cost nothing between scrapes.
Each is one grouped query over indexed columns (live sessions only: ended ones are counted as they end, in
sandbox_sessions_finished_total).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db.models import Count, Sum
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class DatabaseCollector(Collector):
    """sandbox_sessions, warm pools, executions in flight, resources of live sessions, task queue depth."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for part in (self._sessions, self._warm_pools, self._executions, self._queues):
            try:
                families = list(part())
            except Exception:  # the database down: the processes' own metrics are still worth serving
                logger.exception("metrics: %s could not be read", part.__name__.strip("_"))
                continue
            yield from families

    def _sessions(self) -> Iterator[GaugeMetricFamily]:
        from django.conf import settings

        from sessions_app.models import LIVE_SESSION_STATUSES, SandboxSession
        from templates_app.models import SandboxTemplate

        sessions = GaugeMetricFamily(
            "sandbox_sessions",
            "Live sessions by status (creating, running), template and sandbox backend.",
            labels=["status", "template", "runtime"],
        )
        cpu_used = GaugeMetricFamily(
            "sandbox_cpu_used_percent",
            "CPU use of running sessions at their last health probe, summed by template "
            "(100 = one core busy).",
            labels=["template"],
        )
        memory_used = GaugeMetricFamily(
            "sandbox_memory_used_bytes",
            "Memory of running sessions at their last health probe, summed by template.",
            labels=["template"],
        )
        cpu_limit = GaugeMetricFamily(
            "sandbox_cpu_limit_cores", "CPU limits of live sessions, summed by template.", labels=["template"]
        )
        memory_limit = GaugeMetricFamily(
            "sandbox_memory_limit_bytes",
            "Memory limits of live sessions, summed by template.",
            labels=["template"],
        )
        disk_limit = GaugeMetricFamily(
            "sandbox_disk_limit_bytes",
            "Disk limits (workspace size) of live sessions, summed by template.",
            labels=["template"],
        )
        live = SandboxSession.objects.filter(status__in=LIVE_SESSION_STATUSES)
        seen: set[tuple[str, str]] = set()
        for row in live.values("status", "template_id", "runtime_type").annotate(n=Count("id")).order_by():
            runtime = row["runtime_type"] or settings.SANDBOX_RUNTIME
            sessions.add_metric([row["status"], row["template_id"], runtime], row["n"])
            seen.add((row["status"], row["template_id"]))
        # Zero for every active template with none, so a graph shows 0 rather than a gap.
        backends = dict(SandboxTemplate.objects.filter(is_active=True).values_list("id", "sandbox_backend"))
        templates = list(backends)
        for template_id, backend in backends.items():
            for status in LIVE_SESSION_STATUSES:
                if (status, template_id) not in seen:
                    sessions.add_metric([str(status), template_id, backend or settings.SANDBOX_RUNTIME], 0)
        per_template = (
            live.values("template_id")
            .annotate(
                cpu_used=Sum("cpu_usage_percent"),
                memory_used=Sum("memory_usage_mb"),
                memory=Sum("memory_mb"),
                disk=Sum("disk_mb"),
            )
            .order_by()
        )
        for row in per_template:
            template = [row["template_id"]]
            cpu_used.add_metric(template, row["cpu_used"] or 0.0)
            memory_used.add_metric(template, (row["memory_used"] or 0.0) * MIB)
            memory_limit.add_metric(template, (row["memory"] or 0) * MIB)
            disk_limit.add_metric(template, (row["disk"] or 0) * MIB)
        # cpu is stored as text ("0.5"), so it is added up here rather than by the database.
        cores: dict[str, float] = {}
        for template_id, cpu in live.values_list("template_id", "cpu"):
            try:
                cores[template_id] = cores.get(template_id, 0.0) + float(cpu)
            except ValueError:
                continue
        for template_id, total in cores.items():
            cpu_limit.add_metric([template_id], total)
        for template_id in set(templates) - {row["template_id"] for row in per_template}:
            for family in (cpu_used, memory_used, cpu_limit, memory_limit, disk_limit):
                family.add_metric([template_id], 0)
        yield from (sessions, cpu_used, memory_used, cpu_limit, memory_limit, disk_limit)

    def _warm_pools(self) -> Iterator[GaugeMetricFamily]:
        from sessions_app.models import WarmSandbox
        from templates_app.models import SandboxTemplate

        size = GaugeMetricFamily(
            "sandbox_warm_pool_sandboxes",
            "Warm sandboxes by template and state (ready, provisioning).",
            labels=["template", "state"],
        )
        target = GaugeMetricFamily(
            "sandbox_warm_pool_target",
            "Warm sandboxes each active template asks for (its warm_pool_size).",
            labels=["template"],
        )
        for row in WarmSandbox.objects.values("template_id", "status").annotate(n=Count("id")).order_by():
            size.add_metric([row["template_id"], row["status"]], row["n"])
        for template_id, pool_size in SandboxTemplate.objects.filter(is_active=True).values_list(
            "id", "warm_pool_size"
        ):
            target.add_metric([template_id], pool_size)
        yield from (size, target)

    def _executions(self) -> Iterator[GaugeMetricFamily]:
        from executions_app.models import Execution, ExecutionStatus

        executions = GaugeMetricFamily(
            "sandbox_executions",
            "Executions in flight by status (pending: waiting for the stream pool; running) and language.",
            labels=["status", "language"],
        )
        unfinished = Execution.objects.filter(status__in=(ExecutionStatus.PENDING, ExecutionStatus.RUNNING))
        for row in unfinished.values("status", "language").annotate(n=Count("id")).order_by():
            executions.add_metric([row["status"], row["language"]], row["n"])
        yield executions

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        from django.conf import settings
        from django_q.brokers import get_broker
        from django_q.conf import Conf

        depth = GaugeMetricFamily(
            "sandbox_task_queue_depth",
            "Tasks waiting in the django-q2 queues (default: installs, warm builds, housekeeping; "
            "provision: session sandboxes).",
            labels=["queue"],
        )
        for queue, list_key in (("default", Conf.PREFIX), ("provision", settings.SANDBOX_PROVISION_CLUSTER)):
            try:
                depth.add_metric([queue], get_broker(list_key).queue_size())
            except Exception as exc:  # a broker that is down must not take the other metrics with it
                logger.warning("queue depth of %s unavailable: %s", queue, exc)
        yield depth
