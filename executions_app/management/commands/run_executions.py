"""`run_executions`: the execution stream pool (executions_app/streams.py) as a process of its own.

`run_worker` starts it next to the django-q2 clusters; run it alone to scale streams apart from workers.
SIGTERM or SIGINT stops taking work, lets running streams finish for a few seconds, then cancels the rest
in their sandboxes so they end recorded.
"""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from executions_app.streams import ExecutionStreamPool


class Command(BaseCommand):
    help = "Stream async executions from their sandboxes, many at once, until stopped."

    def add_arguments(self, parser):
        parser.add_argument(
            "--streams", type=int, default=0, help="Concurrent streams (default SANDBOX_EXECUTION_STREAMS)."
        )
        parser.add_argument("--grace", type=float, default=5.0, help="Seconds running streams get at stop.")

    def handle(self, *args, streams: int, grace: float, **options):
        pool = ExecutionStreamPool(size=streams or None)
        signal.signal(signal.SIGTERM, lambda signum, frame: pool.stop())
        signal.signal(signal.SIGINT, lambda signum, frame: pool.stop())
        pool.serve()
        pool.drain(grace)
