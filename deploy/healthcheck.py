"""The image's health check: whatever this container runs, checked the way it can be.

One image runs the web server (`serve --no-workers`), the workers (`run_worker`) or both (`serve`), so the check
looks at the processes in the container rather than at how it was started:

- a web server (uvicorn) must answer GET /api/v1/health with 200 on $PORT;
- workers must have both django-q2 clusters (default and provisioning) and the execution stream pool alive:
  `run_worker` restarts a child that dies, so a missing one means it keeps dying or the supervisor is stuck.

A container running neither (a one-shot `migrate`) is healthy. Standard library only, and no Django: the check
runs every few seconds and must cost next to nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process in the container."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_bytes()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue  # exited while we looked
        # The command name in stat is in parentheses and may hold spaces: the parent pid follows the last ")".
        found[int(proc.name)] = (int(stat[stat.rindex(b")") + 2 :].split()[1]), cmdline)
    return found


def main() -> int:
    procs = processes()
    problems = []
    if any(b"uvicorn" in cmdline for _, cmdline in procs.values()):
        import urllib.request  # only here: a worker's check need not load http and ssl

        url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/api/v1/health"
        try:
            with urllib.request.urlopen(url, timeout=4) as response:
                if response.status != 200:
                    problems.append(f"{url} answered {response.status}")
        except OSError as exc:
            problems.append(f"{url}: {exc}")
    supervisors = {pid for pid, (_, cmdline) in procs.items() if b"run_worker" in cmdline}
    for pid in supervisors:
        children = [line for parent, line in procs.values() if parent == pid]
        if any(child in supervisors for child, (parent, _) in procs.items() if parent == pid):
            continue  # tini (PID 1), whose command line names run_worker too
        clusters = sum(b"qcluster" in line for line in children)
        if clusters < 2:
            problems.append(f"{clusters} of 2 worker clusters running")
        if not any(b"run_executions" in line for line in children):
            problems.append("the execution stream pool is not running")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
