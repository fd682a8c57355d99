"""What metrics and structured logs add to one request, part by part, in multi-process mode (as `serve` runs).

(a) the HTTP metrics middleware (sandbox_site/metrics/http.py) around a request that does nothing (an API
    view's request, resolved), and for comparison django-prometheus's own pair of middlewares;
(b) the query wrapper (sandbox_site/metrics/database.py) around one query that does nothing, and the same
    query without it; an execute-sync makes a handful of queries (`--queries`, default 8: the key lookup and
    executions_app/tests/test_sync_path_queries.py's at most 6, and one to spare);
(c) what the execution path records when an execution ends (record.execution_finished) and its log context;
(d) the JSON request log line (RequestLogMiddleware, formatted and written to /dev/null), LOG_FORMAT=json only.
Total per execute-sync = (a) + (b) x queries + (c), and (d) with JSON logs. Everything runs in this process
against a temporary metrics directory; no database or server is needed.

Usage: python bench/metrics_overhead.py [--runs 20000] [--queries 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Multi-process mode, as under `serve`: must be set before prometheus_client is imported.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandbox_site.settings")
os.environ["SANDBOX_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-data-")

import django  # noqa: E402

django.setup()

from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.urls import resolve  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_prometheus.middleware import (  # noqa: E402
    Metrics,
    PrometheusAfterMiddleware,
    PrometheusBeforeMiddleware,
)

from sandbox_site.log_format import (  # noqa: E402
    JsonFormatter,
    LogContextFilter,
    RequestLogMiddleware,
    log_context,
)
from sandbox_site.metrics import record  # noqa: E402
from sandbox_site.metrics.database import QueryMetrics  # noqa: E402
from sandbox_site.metrics.http import HttpMetricsMiddleware  # noqa: E402
from sandbox_site.request_id import RequestIdLogFilter  # noqa: E402


def per_call_us(fn, runs: int, repeats: int = 7) -> list[float]:
    """Microseconds per call, one sample per batch of `runs` calls."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(runs):
            fn()
        samples.append((time.perf_counter() - started) / runs * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    factory = RequestFactory()
    path = "/api/v1/sessions/some-session/execute-sync"
    request = factory.post(path)
    request.resolver_match = resolve(path)
    response = HttpResponse(b"{}", content_type="application/json")

    def view(_request):
        return response

    class PairMetrics(Metrics):
        """django-prometheus's full set, registered nowhere (the HTTP middleware's share its names)."""

        _instance = None

        def register_metric(self, metric_cls, name, documentation, labelnames=(), **kwargs):
            return metric_cls(name, documentation, labelnames=labelnames, registry=None, **kwargs)

    class Before(PrometheusBeforeMiddleware):
        metrics_cls = PairMetrics

    class After(PrometheusAfterMiddleware):
        metrics_cls = PairMetrics

    after = After(view)
    stack = Before(after)

    def through_pair():
        after.process_view(request, view, (), {})
        return stack(request)

    ours = HttpMetricsMiddleware(view)

    def through_ours():
        return ours(request)

    bare_view = view

    def bare():
        return bare_view(request)

    wrapper = QueryMetrics("default", "mysql")

    def execute(sql, params, many, context):
        return None

    def wrapped_query():
        return wrapper(execute, "SELECT 1", (), False, None)

    def bare_query():
        return execute("SELECT 1", (), False, None)

    class Done:
        language = "python"
        status = "completed"
        started_at = timezone.now()
        stdout = "hello\n"
        stderr = ""
        session_id = "sess_x"
        id = "exec_x"

    done = Done()

    def recorded():
        with log_context(session_id=done.session_id, execution_id=done.id):
            pass
        record.execution_finished(done)

    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - for the life of the bench
    sink.setFormatter(JsonFormatter())
    sink.addFilter(RequestIdLogFilter())
    sink.addFilter(LogContextFilter())
    request_logger = logging.getLogger("sandbox.request")
    request_logger.handlers = [sink]
    request_logger.propagate = False
    request_logger.setLevel(logging.INFO)
    logged = RequestLogMiddleware(view)

    def with_request_line():
        return logged(request)

    runs = args.runs
    bare_us = statistics.median(per_call_us(bare, runs))
    figures = {
        "middleware_us": statistics.median(per_call_us(through_ours, runs)) - bare_us,
        "django_prometheus_pair_us": statistics.median(per_call_us(through_pair, runs)) - bare_us,
        "query_wrapper_us": statistics.median(per_call_us(wrapped_query, runs))
        - statistics.median(per_call_us(bare_query, runs)),
        "execution_record_us": statistics.median(per_call_us(recorded, runs)),
        "json_request_line_us": statistics.median(per_call_us(with_request_line, runs // 4)) - bare_us,
    }
    figures["execute_sync_total_us"] = (
        figures["middleware_us"] + figures["query_wrapper_us"] * args.queries + figures["execution_record_us"]
    )
    figures["execute_sync_total_json_us"] = figures["execute_sync_total_us"] + figures["json_request_line_us"]
    load = os.getloadavg()
    print(f"metrics and logs overhead per request, multi-process mode ({runs} calls per sample, median of 7)")
    print(f"{'part':<44}{'microseconds':>14}")
    rows = [
        ("(a) HTTP metrics middleware", "middleware_us"),
        ("    django-prometheus's pair, for comparison", "django_prometheus_pair_us"),
        ("(b) query wrapper, per query", "query_wrapper_us"),
        ("(c) execution recorded + log context", "execution_record_us"),
        ("(d) JSON request line (LOG_FORMAT=json)", "json_request_line_us"),
        (f"execute-sync: a + {args.queries} x b + c", "execute_sync_total_us"),
        ("execute-sync with JSON logs: + d", "execute_sync_total_json_us"),
    ]
    for label, key in rows:
        print(f"{label:<44}{figures[key]:>14.1f}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        # Milliseconds, as every bench's --json line.
        print(json.dumps({key.replace("_us", "_ms"): round(v / 1000, 4) for key, v in figures.items()}))


if __name__ == "__main__":
    main()
