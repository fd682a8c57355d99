"""Prometheus metrics at /metrics: django-prometheus's HTTP and database metrics, and the product's own.

The product's metrics are named after what operators of sandbox platforms already graph (agent-sandbox's
creation latency by template and warm or cold start, sandboxes by status, warm pool size, finished by reason;
E2B's running sandboxes, create success and failure, CPU and memory used); docs/operations.md lists them.

- `record`: counters and histograms the services update where the work happens;
- `collector`: gauges read from the database at scrape time (sessions by status, warm pools, queues, usage);
- `database`: django-prometheus's query metrics through an execute wrapper, keeping Django's own engines;
- `multiprocess`: the shared value directory `manage.py serve` gives its web and worker processes;
- `access` and `views`: who may read /metrics, and the view.

This package's own module imports nothing: settings import `access` before prometheus_client may be imported
(it picks in-memory or multi-process storage once, when first imported).
"""
