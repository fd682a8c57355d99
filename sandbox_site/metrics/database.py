"""django-prometheus's database metrics without its database engines.

django-prometheus counts connections and queries by replacing the ENGINE with its own backend classes. The
settings keep Django's engines (SQLite with WAL and IMMEDIATE transactions, MariaDB with its own options) and
instead every new connection gets an execute wrapper (Django's documented hook around each query) that feeds
the same metrics: django_db_new_connections_total, django_db_execute_total, django_db_execute_many_total,
django_db_errors_total and django_db_query_duration_seconds, labelled by alias and vendor as
django-prometheus labels them, so its dashboards work unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db.backends.signals import connection_created
from django_prometheus.db import (
    connections_total,
    errors_total,
    execute_many_total,
    execute_total,
    query_duration_seconds,
)


class QueryMetrics:
    """The execute wrapper of one connection (one per connection object, i.e. per alias and thread)."""

    def __init__(self, alias: str, vendor: str) -> None:
        self.alias = alias
        self.vendor = vendor
        # Children resolved once: a query then costs two increments and one observation, no label lookups.
        self.executed = execute_total.labels(alias, vendor)
        self.executed_many = execute_many_total.labels(alias, vendor)
        self.duration = query_duration_seconds.labels(alias, vendor)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if many:
            count = len(params) if hasattr(params, "__len__") else 1
            self.executed.inc(count)
            self.executed_many.inc(count)
        else:
            self.executed.inc()
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        except Exception as exc:
            errors_total.labels(self.alias, self.vendor, type(exc).__name__).inc()
            raise
        finally:
            self.duration.observe(time.perf_counter() - started)


def _instrument(sender: Any, connection: Any, **kwargs: Any) -> None:
    connections_total.labels(connection.alias, connection.vendor).inc()
    # A connection object reconnects (CONN_MAX_AGE, health checks): it keeps the wrapper it was given. First
    # in the list (the outermost): `connection.execute_wrapper()` blocks pop the last one when they end.
    if not any(isinstance(wrapper, QueryMetrics) for wrapper in connection.execute_wrappers):
        connection.execute_wrappers.insert(0, QueryMetrics(connection.alias, connection.vendor))


def instrument_database() -> None:
    """Count every connection opened from now on, and time its queries (called once, from AppConfig.ready)."""
    connection_created.connect(_instrument, dispatch_uid="sandbox_site.metrics.database")
