"""`run_worker`: everything background work needs, as one command that supervises three processes.

- the default django-q2 cluster: schedules (sweeps, probes, state sync, warm-pool refill, lease expiry),
  dependency installs, warm sandbox builds;
- the provisioning cluster (Q_CLUSTER_NAME=provision): session sandboxes only, so a create never waits
  behind any of the above;
- the execution stream pool (`run_executions`): every async execution, hundreds at once per process, so
  long runs never take a worker process (docs/scheduling.md).

Before they start, the schedules are written and sandbox state is reconciled once: after a crash or restart,
sandboxes nobody owns are removed and sessions whose sandbox vanished are failed before new work is taken.

A child that exits is restarted (one that keeps dying at start stops the whole worker, so a broken
configuration is seen, not retried forever). SIGTERM or SIGINT reaches each child exactly once (django-q2's
cluster can hang when it is signalled twice while shutting down), then SIGKILL after the grace period.
Children run in sessions of their own and die with this process (PR_SET_PDEATHSIG), so `serve`, a process
manager or a test can stop the whole worker by signalling this one process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from sandbox_site.management.supervision import StopRequested, stop_children

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
# A child that exits this soon after it started, this many times in a row, stops the worker.
QUICK_EXIT_SECONDS = 5.0
QUICK_EXITS_ALLOWED = 5


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the child outlives a killed supervisor, as a plain qcluster would


class Child:
    """One supervised process: its command, extra environment, and restart bookkeeping."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.quick_exits = 0

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - this process starts no threads
        )


class Command(BaseCommand):
    help = "Set up schedules, sync sandbox state, then run the worker clusters and the execution stream pool."

    def add_arguments(self, parser):
        parser.add_argument("--grace", type=float, default=12.0, help="Seconds to wait before SIGKILL.")

    def handle(self, *args, grace: float, **options):
        from sessions_app.lifecycle import sessions_sync_state

        call_command("setup_schedules", verbosity=0)
        try:
            counts = sessions_sync_state()
            logger.info("state sync at start: %s", counts)
        except Exception:
            logger.exception("state sync at start failed; the periodic sync will retry")
        python = sys.executable
        children = [
            Child("cluster", [python, MANAGE, "qcluster"], {}),
            Child(
                "provisioning",
                [python, MANAGE, "qcluster"],
                {"Q_CLUSTER_NAME": settings.SANDBOX_PROVISION_CLUSTER},
            ),
            Child("executions", [python, MANAGE, "run_executions"], {}),
        ]
        stopping = StopRequested()
        for child in children:
            child.start()
        exit_code = 0
        while not stopping:
            for child in children:
                assert child.proc is not None
                if child.proc.poll() is None:
                    continue
                quick = time.monotonic() - child.started_at < QUICK_EXIT_SECONDS
                child.quick_exits = child.quick_exits + 1 if quick else 0
                if child.quick_exits >= QUICK_EXITS_ALLOWED:
                    self.stderr.write(f"{child.name} keeps exiting ({child.proc.returncode}); stopping")
                    exit_code = 1
                    stopping.requested = True
                    break
                logger.warning("%s exited with %s; restarting it", child.name, child.proc.returncode)
                child.start()
            time.sleep(0.2)
        stop_children([child.proc for child in children if child.proc is not None], grace)
        sys.exit(exit_code)
