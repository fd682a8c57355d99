"""What `serve` and `run_worker` share as supervisors of child processes: how they are told to stop, and how
they stop their children."""

from __future__ import annotations

import os
import signal
import subprocess
import time


class StopRequested:
    """Set by SIGINT or SIGTERM (from then on); the supervisor's loop polls it."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._set)
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, signum, frame) -> None:
        self.requested = True

    def __bool__(self) -> bool:
        return self.requested


def stop_children(children: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM every live child exactly once (django-q2's cluster can hang when it is signalled twice while
    shutting down), then SIGKILL the process group of any still running after `grace` seconds: children
    run in sessions of their own, and their own children (uvicorn's web processes, django-q2's cluster
    processes) must not outlive them."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()
