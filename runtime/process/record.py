"""What a process-backend sandbox leaves on the host: its record file, its processes, its directory.

A sandbox must be findable and killable by a control plane that did not start it (after a restart), so the
record names the supervisor by pid *and* start time, and every kill checks both: pids are reused, and
signalling a stranger's process group would be a disaster.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

META_NAME = "sandbox.json"


def start_time(pid: int | None) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone or a zombie.

    A pid plus its start time names one process for good: after a restart the recorded pid may belong to
    someone else, and signalling that would be a disaster.
    """
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: Any, recorded_start: Any) -> bool:
    """True if `pid` runs and is the process that was recorded (None: any process with that pid)."""
    if not pid:
        return False
    current = start_time(int(pid))
    return current is not None and (recorded_start is None or current == int(recorded_start))


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    return True


def wait_gone(pid: int, start: int | None, proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is not None:  # our own child: reap it, or it lingers as a zombie
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return
    deadline = time.monotonic() + timeout
    while alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.01)


def read_record(root: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(root, META_NAME), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(root: str, data: dict[str, Any]) -> None:
    tmp = os.path.join(root, META_NAME + ".tmp")
    # 0600: the record names the session's uid, cgroup and stage; nobody but the control plane reads it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, os.path.join(root, META_NAME))  # readers never see half a record


def log_tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            text = fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f"\nexecutor output:\n{text}" if text else ""
