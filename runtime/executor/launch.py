"""Starting one execution's process: forked by the zygote when it is up, else spawned as a fresh interpreter.

Either way the daemon gets a `Launched`: the child's pid and a status socket that later delivers one JSON
message with the raw wait status and rusage (the zygote reaps its children; for a spawned child a waiter
thread does). Every fd the daemon creates is close-on-exec (PEP 446) and the zygote never had the daemon's
listening sockets, so a child inherits only the five fds it is handed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
import threading

PACKAGE = __package__ or "executor"
# The directory from which PACKAGE is importable: "executor" lives in it, or "runtime/executor" does.
PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))
for _ in PACKAGE.split("."):
    PACKAGE_ROOT = os.path.dirname(PACKAGE_ROOT)

PIPE_SIZE = 256 * 1024
# As for the zygote (zygote.py): no "" on sys.path while the executor's own modules are imported.
_CHILD_BOOTSTRAP = (
    "import sys; sys.path[:] = [{root!r}] + [p for p in sys.path if p]; "
    "import {pkg}.child as c; del sys.path[0]; c.main_from_fds()"
)


class Launched:
    """A started child: its pid (= its process group) and where its exit status will arrive."""

    def __init__(self, pid: int, status: socket.socket, via: str) -> None:
        self.pid = pid
        self.status = status
        self.via = via


class Job:
    """The descriptors of one execution before it starts; the daemon keeps the read ends."""

    def __init__(self, payload: dict, stdin_data: bytes | None) -> None:
        self._fds: list[int] = []
        self.stdout_r, self.stdout_w = self._pipe()
        self.stderr_r, self.stderr_w = self._pipe()
        self.result_r, self.result_w = self._pipe()
        self.payload_fd = self._track(_memfile(json.dumps(payload).encode("utf-8")))
        if stdin_data is None:
            self.stdin_fd = self._track(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        else:
            self.stdin_fd = self._track(_memfile(stdin_data))

    def _track(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        try:
            # A roomier pipe lets a fast writer run on while the daemon is busy; the default (64 KiB) is fine.
            fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:
            pass
        return self._track(r), self._track(w)

    def child_fds(self) -> list[int]:
        return [self.stdin_fd, self.stdout_w, self.stderr_w, self.result_w, self.payload_fd]

    def close_child_side(self) -> None:
        """Drop our copies of what the child now holds; only then can its pipes reach EOF."""
        for fd in self.child_fds():
            self.close(fd)

    def close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self._fds):
            self.close(fd)


def _memfile(data: bytes) -> int:
    """An anonymous, seekable file holding `data`, positioned at its start."""
    try:
        fd = os.memfd_create("sandbox-exec", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="sandbox-exec-")
        os.unlink(path)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def spawn(job: Job, env: dict[str, str]) -> Launched:
    """Start the child as a fresh interpreter: the fallback when no zygote can fork it."""
    # posix_spawn applies dup2 actions in order; lifting every fd above 9 first means no target (0-4)
    # can overwrite a source that still has to be moved.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in job.child_fds()]
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-c", _CHILD_BOOTSTRAP.format(root=PACKAGE_ROOT, pkg=PACKAGE)],
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(high)],
            setsid=True,
        )
    finally:
        for fd in high:
            os.close(fd)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def wait() -> None:
        _, status, usage = os.wait4(pid, 0)
        message = {
            "status": status,
            "utime": usage.ru_utime,
            "stime": usage.ru_stime,
            "maxrss": usage.ru_maxrss,
        }
        try:
            theirs.send(json.dumps(message).encode())
        except OSError:
            pass  # the execution already gave up on us
        finally:
            theirs.close()

    threading.Thread(target=wait, name=f"wait-{pid}", daemon=True).start()
    return Launched(pid, ours, "spawn")
