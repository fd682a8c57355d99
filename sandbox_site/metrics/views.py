"""GET /metrics: the Prometheus text format (OpenMetrics when the scraper asks for it), for operators only
(sandbox_site/metrics/access.py says who)."""

from __future__ import annotations

from collections.abc import Iterable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sandbox_site.metrics import multiprocess
from sandbox_site.metrics.access import refusal
from sandbox_site.metrics.collector import DatabaseCollector


class _ThisProcess(Collector):
    """The default registry's metrics: this process's, when values live in its memory."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    """Everything /metrics shows: every process's values (or this one's) and the database's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess.enabled():
        multiprocess.mark_dead_processes()
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector())
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(scrape_registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
