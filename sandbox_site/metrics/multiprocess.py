"""prometheus_client's multi-process mode for `manage.py serve`: one directory of per-process value files.

prometheus_client picks its storage when it is first imported, from PROMETHEUS_MULTIPROC_DIR; `serve` sets the
variable before it starts the web and worker processes, so each of them (and every process they fork) writes
its counters and histograms to `<pid>`-named files there, and /metrics in any web process adds them all up.
The directory is emptied when `serve` starts: values of a previous run's processes would otherwise be added
to this run's. Files of processes that have exited (a recycled django-q2 worker, a restarted uvicorn worker)
stay, as prometheus_client intends (their counts are part of the totals); each scrape tells
prometheus_client which processes are gone (`mark_process_dead`), which drops their live gauges.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID_FILE = re.compile(r"_(\d+)\.db$")


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def prepare(directory: Path) -> Path:
    """Create (0700) or empty `directory` and point this process and its future children at it.

    Call it before anything imports prometheus_client in the processes that are to share it.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in directory.glob("*.db"):
        entry.unlink(missing_ok=True)
    os.environ[ENV] = str(directory)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_processes() -> list[int]:
    """Tell prometheus_client about every process with files in the directory that no longer runs."""
    from prometheus_client import multiprocess

    directory = os.environ.get(ENV)
    if not directory:
        return []
    pids = set()
    for name in os.listdir(directory):
        match = _PID_FILE.search(name)
        if match and name.startswith("gauge_live"):
            pids.add(int(match.group(1)))
    dead = [pid for pid in sorted(pids) if not _alive(pid)]
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return dead
