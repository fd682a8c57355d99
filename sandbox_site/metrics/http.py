"""django-prometheus's HTTP metrics, the ones its dashboards chart, from one middleware instead of its two.

django-prometheus's own pair writes some twenty values per request (by transport, charset, body sizes, ...);
with prometheus_client in multi-process mode each is a locked write to a shared file, which cost about a
quarter of a millisecond per request (bench/metrics_overhead.py), on a path (execute-sync) measured in
milliseconds. This middleware keeps django-prometheus's metric names, labels and buckets (`Metrics`, with
only these registered) and writes four values per request:

- django_http_requests_total_by_method{method}
- django_http_responses_total_by_status_view_method{status, view, method}
- django_http_requests_latency_seconds_by_view_method{view, method} (the whole middleware stack included:
  this middleware is the outermost)
- django_http_exceptions_total_by_type{type} and django_http_exceptions_total_by_view{view} on a view's
  exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django_prometheus.conf import NAMESPACE, PROMETHEUS_LATENCY_BUCKETS
from django_prometheus.middleware import Metrics
from prometheus_client import Counter, Histogram

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})
UNNAMED = "<unnamed view>"


class HttpMetrics(Metrics):
    """django-prometheus's metric definitions, only those this middleware writes."""

    _instance = None  # its own singleton, never django-prometheus's full set

    def register(self) -> None:
        self.requests_by_method = self.register_metric(
            Counter,
            "django_http_requests_total_by_method",
            "Count of requests by method.",
            ["method"],
            namespace=NAMESPACE,
        )
        self.responses_by_status_view_method = self.register_metric(
            Counter,
            "django_http_responses_total_by_status_view_method",
            "Count of responses by status, view, method.",
            ["status", "view", "method"],
            namespace=NAMESPACE,
        )
        self.requests_latency_by_view_method = self.register_metric(
            Histogram,
            "django_http_requests_latency_seconds_by_view_method",
            "Histogram of request processing time labelled by view.",
            ["view", "method"],
            buckets=PROMETHEUS_LATENCY_BUCKETS,
            namespace=NAMESPACE,
        )
        self.exceptions_by_type = self.register_metric(
            Counter,
            "django_http_exceptions_total_by_type",
            "Count of exceptions by object type.",
            ["type"],
            namespace=NAMESPACE,
        )
        self.exceptions_by_view = self.register_metric(
            Counter,
            "django_http_exceptions_total_by_view",
            "Count of exceptions by view.",
            ["view"],
            namespace=NAMESPACE,
        )


def _view_name(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return (match.view_name if match is not None else None) or UNNAMED


class HttpMetricsMiddleware:
    """Outermost middleware; see the module docstring. Label children are kept, so a request seen before
    costs no label lookups (views, methods and statuses are few). It runs in the mode of the stack inside
    it (sync or async) and so never adds a thread hop of its own."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.metrics = HttpMetrics.get_instance()
        self._by_method: dict[str, Any] = {}
        self._by_response: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        started = time.perf_counter()
        method = self._count_request(request)
        response = self.get_response(request)
        self._count_response(request, response, method, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        method = self._count_request(request)
        response = await self.get_response(request)
        self._count_response(request, response, method, started)
        return response

    def _count_request(self, request: HttpRequest) -> str:
        method = request.method if request.method in METHODS else "<invalid method>"
        counter = self._by_method.get(method)
        if counter is None:
            counter = self._by_method[method] = self.metrics.requests_by_method.labels(method)
        counter.inc()
        return method

    def _count_response(
        self, request: HttpRequest, response: HttpResponse, method: str, started: float
    ) -> None:
        key = (str(response.status_code), _view_name(request), method)
        children = self._by_response.get(key)
        if children is None:
            children = self._by_response[key] = (
                self.metrics.responses_by_status_view_method.labels(*key),
                self.metrics.requests_latency_by_view_method.labels(key[1], method),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        self.metrics.exceptions_by_type.labels(type(exception).__name__).inc()
        self.metrics.exceptions_by_view.labels(_view_name(request)).inc()
