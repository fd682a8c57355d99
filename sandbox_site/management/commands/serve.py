"""`serve`: run the web server (daphne) and the background workers (django-q2 cluster) together.

Ctrl-C or SIGTERM stops both: each child gets exactly one SIGTERM (django-q2's cluster can hang when it is
signalled twice while shutting down), then SIGKILL if it has not exited within the grace period.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run daphne and a django-q2 cluster together until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-workers", action="store_true", help="Run the web server only.")
        parser.add_argument("--grace", type=float, default=10.0, help="Seconds to wait before SIGKILL.")

    def handle(self, *args, host: str, port: int, no_workers: bool, grace: float, **options):
        commands = [
            [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "sandbox_site.asgi:application"],
        ]
        if not no_workers:
            commands.append([sys.executable, "manage.py", "run_worker"])
        # Own process groups: a terminal's Ctrl-C reaches only this supervisor, which then signals each
        # child once, instead of every process receiving SIGINT at the same moment.
        names = ["daphne", "worker"][: len(commands)]
        children = [subprocess.Popen(command, start_new_session=True) for command in commands]
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(f"Serving on http://{host}:{port}  (Ctrl-C stops the server and the workers)")
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
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        sys.exit(exit_code)
