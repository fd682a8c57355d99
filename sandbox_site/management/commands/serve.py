"""`serve`: run the web server (uvicorn) and the background workers (`run_worker`) together.

The web server is uvicorn with httptools and uvloop, `--workers` processes under uvicorn's own supervisor.
uvicorn hands a request's body to the application as it arrives, so sandbox_site/body_guard.py can refuse
an unauthenticated or oversized request from its headers and cut a chunked body off at the limit; daphne
reads every body whole into memory before the application sees the request (daphne issue #483), which let
one anonymous 300 MiB POST cost the web process 1.3 GB. daphne stays the development server (`runserver`).

uvicorn's supervisor rather than gunicorn with uvicorn workers: it restarts a worker that dies or stops
answering its health ping, reloads workers one by one on SIGHUP, and stops them all on one SIGTERM, which is
what gunicorn would add here, without a second server package and its configuration.

Ctrl-C or SIGTERM stops both: each child gets exactly one SIGTERM (django-q2's cluster can hang when it is
signalled twice while shutting down; uvicorn's supervisor passes its SIGTERM on to each web process once),
then SIGKILL if it has not exited within the grace period.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from sandbox_site.log_format import uvicorn_log_config
from sandbox_site.management.supervision import StopRequested, stop_children
from sandbox_site.metrics import multiprocess as metrics_dir

logger = logging.getLogger(__name__)

# Seconds uvicorn gives open requests and websockets to finish after SIGTERM before it cancels them; below
# the default grace, so the web processes exit on their own before SIGKILL.
WEB_SHUTDOWN_SECONDS = 5
# The execution websocket receives only small control messages; uvicorn's default would accept 16 MiB.
WEBSOCKET_MAX_MESSAGE = 1024 * 1024


def uvicorn_command(host: str, port: int, workers: int) -> list[str]:
    """The uvicorn command line `serve` runs (the benches start the server the same way)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "sandbox_site.asgi:application",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets-sansio",
        # The lifespan starts the MCP server's session manager with each web process (asgi.py routes it);
        # "on" rather than "auto": a failure to start it stops the server instead of leaving /mcp broken.
        "--lifespan",
        "on",
        # X-Forwarded-For/-Proto are believed only from the proxies an operator names (like daphne's default,
        # none): anyone else could claim any client address, and login throttling counts by address.
        *(
            ["--proxy-headers", "--forwarded-allow-ips", settings.SANDBOX_FORWARDED_ALLOW_IPS]
            if settings.SANDBOX_FORWARDED_ALLOW_IPS
            else ["--no-proxy-headers"]
        ),
        "--no-server-header",
        "--ws-max-size",
        str(WEBSOCKET_MAX_MESSAGE),
        "--timeout-graceful-shutdown",
        str(WEB_SHUTDOWN_SECONDS),
        "--log-level",
        settings.LOG_LEVEL.lower(),
        # JSON logs: uvicorn's own lines in JSON too, and one request line from Django instead of its access log.
        *(
            ["--no-access-log", "--log-config", uvicorn_log_config(settings.DATA_DIR / "uvicorn-log.json")]
            if settings.LOG_FORMAT == "json"
            else []
        ),
    ]


class Command(BaseCommand):
    help = (
        "Run uvicorn (SANDBOX_WEB_WORKERS processes) and the background workers together until interrupted."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-workers", action="store_true", help="Run the web server only.")
        parser.add_argument(
            "--web-workers",
            type=int,
            default=None,
            help="Web server processes (default: SANDBOX_WEB_WORKERS, itself one per core).",
        )
        parser.add_argument("--grace", type=float, default=10.0, help="Seconds to wait before SIGKILL.")

    def handle(
        self,
        *args,
        host: str,
        port: int,
        no_workers: bool,
        web_workers: int | None,
        grace: float,
        **options,
    ):
        web_processes = web_workers or settings.SANDBOX_WEB_WORKERS
        # Before any child starts (and imports prometheus_client): every web and worker process keeps its
        # metric values in this directory, emptied now, and /metrics adds them up (sandbox_site/metrics/).
        metrics_dir.prepare(Path(os.environ.get(metrics_dir.ENV) or settings.SANDBOX_METRICS_DIR))
        commands = [uvicorn_command(host, port, web_processes)]
        if not no_workers:
            commands.append([sys.executable, "manage.py", "run_worker"])
        # Own process groups: a terminal's Ctrl-C reaches only this supervisor, which then signals each
        # child once, instead of every process receiving SIGINT at the same moment.
        names = ["uvicorn", "worker"][: len(commands)]
        children = [subprocess.Popen(command, start_new_session=True) for command in commands]
        stopping = StopRequested()
        serving = (
            f"Serving on http://{host}:{port} with {web_processes} web process(es)"
            "  (Ctrl-C stops the server and the workers)"
        )
        if settings.LOG_FORMAT == "json":
            logger.warning(serving)  # a log line like every other, and shown at every LOG_LEVEL as before
        else:
            self.stdout.write(serving)
        exit_code = 0
        while not stopping:
            exited = [
                (name, child) for name, child in zip(names, children, strict=True) if child.poll() is not None
            ]
            if exited:
                name, child = exited[0]
                exit_code = child.returncode or 1
                self.stderr.write(f"{name} exited with {child.returncode}; stopping the rest")
                break
            time.sleep(0.2)
        stop_children(children, grace)
        sys.exit(exit_code)
