"""The zygote: a warm, single-threaded Python process that forks one child per execution when the daemon asks.

Protocol (both sockets are AF_UNIX SOCK_SEQPACKET, so every message arrives whole, with its fds):
- the control socket (inherited, fd number in argv[1]) carries one message per execution: b"fork" plus six
  fds via SCM_RIGHTS: a status socket, then the child's stdin, stdout, stderr, result and payload fds;
- the zygote hands the fds to its spare child, or forks one when it has none; the child closes everything of
  the zygote's and becomes the execution (child.start);
- on the status socket the zygote sends {"pid": N} once the child has its fds (or {"error": ...} when fork
  fails) and, once it has reaped the child with wait4, {"status": S, "utime": .., "stime": .., "maxrss": ..}.
The zygote sends b"ready" on the control socket once its imports are done, and exits when that socket closes.
It stays single-threaded: forking a process with threads could copy a lock some other thread held.

The spare: while no execution runs, the zygote keeps one child forked ahead, already its own session leader
and past Python's after-fork work, blocked on a socket until an execution's fds arrive. The fork and the first
copy-on-write faults of a fresh child (about a millisecond) then happen between executions, not inside one.
The spare is still non-dumpable and holds nothing but that socket; it becomes the execution exactly as a fresh
fork would. It is forked only while no execution runs, so executions never share the CPU with it and a running
one never sees an extra process of ours (RLIMIT_NPROC counts them); concurrent executions fork as before. A
spare that dies (killed by a leftover process of the same user) is reaped and replaced; one that cannot take
its fds is skipped for a fresh fork. It exits when its socket closes, so it never outlives the zygote.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys

from . import child, pyrunner
from .prctl import PR_SET_PDEATHSIG, prctl, set_dumpable

# Modules most handlers use; importing them here once means no child pays for them.
PRELOAD = (
    "asyncio",
    "base64",
    "collections",
    "dataclasses",
    "datetime",
    "decimal",
    "fcntl",
    "functools",
    "hashlib",
    "inspect",
    "itertools",
    "math",
    "pathlib",
    "random",
    "re",
    "resource",
    "string",
    "subprocess",
    "typing",
    "urllib.parse",
    "uuid",
)
MAX_FDS = 6


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.children: dict[int, socket.socket] = {}
        self.spare: tuple[int, socket.socket] | None = None  # (pid, the socket its fds go through)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.ctl, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        # SIGCHLD only has to wake the loop; the reaping happens there, never inside a signal handler.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)

    def serve(self) -> None:
        while True:
            if self.spare is None and not self.children:
                self._fork_spare()
            for key, _ in self.selector.select():
                if key.fileobj is self.ctl:
                    if not self._receive():
                        return
                else:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
            self._reap()

    def _receive(self) -> bool:
        try:
            msg, fds, flags, _ = socket.recv_fds(self.ctl, 64, MAX_FDS)
        except InterruptedError:
            return True
        if not msg:
            return False  # the daemon is gone
        if len(fds) != MAX_FDS or flags & getattr(socket, "MSG_CTRUNC", 0):
            for fd in fds:
                os.close(fd)
            return True
        self._fork(socket.socket(fileno=fds[0]), fds[1:])
        return True

    def _fork(self, status: socket.socket, fds: list[int]) -> None:
        pid = self._hand_to_spare(fds)
        if pid is None:
            try:
                pid = os.fork()
            except OSError as exc:
                self._send(status, {"error": f"fork failed: {exc}"})
                status.close()
                for fd in fds:
                    os.close(fd)
                return
            if pid == 0:
                try:
                    self._leave_zygote(status)
                    child.start(fds)
                finally:
                    os._exit(127)
        for fd in fds:
            os.close(fd)
        self.children[pid] = status
        self._send(status, {"pid": pid})

    def _hand_to_spare(self, fds: list[int]) -> int | None:
        """The spare's pid once it holds the execution's fds; None when there is no spare able to take them."""
        if self.spare is None:
            return None
        (pid, sock), self.spare = self.spare, None
        try:
            socket.send_fds(sock, [b"run"], fds)
        except OSError:
            return None  # it died (to be reaped as a stranger): fork a fresh child instead
        finally:
            sock.close()
        return pid

    def _fork_spare(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return  # executions fork for themselves meanwhile
        if pid == 0:
            try:
                ours.close()
                self._leave_zygote(None)
                child.start_spare(theirs)
            finally:
                os._exit(127)
        theirs.close()
        self.spare = (pid, ours)

    def _leave_zygote(self, status: socket.socket | None) -> None:
        """In a fresh fork: drop every object of the zygote's."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Close the zygote's objects properly (not just their fds), so none of them can later close a number
        # that user code has reused.
        self.selector.close()
        self.ctl.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        if status is not None:
            status.close()
        for other in self.children.values():
            other.close()
        self.children.clear()
        if self.spare is not None:
            self.spare[1].close()
            self.spare = None

    def _reap(self) -> None:
        while self.children or self.spare is not None:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and self.spare[0] == pid:
                self.spare[1].close()
                self.spare = None  # killed while waiting: serve() forks the next one
                continue
            sock = self.children.pop(pid, None)
            if sock is None:
                continue
            self._send(
                sock,
                {
                    "status": status,
                    "utime": usage.ru_utime,
                    "stime": usage.ru_stime,
                    "maxrss": usage.ru_maxrss,
                },
            )
            sock.close()

    @staticmethod
    def _send(sock: socket.socket, message: dict) -> None:
        try:
            sock.send(json.dumps(message).encode())
        except OSError:
            pass  # the daemon gave up on this execution; nothing to tell


def _die_with_parent(parent: int) -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # best effort; the closed control socket ends us anyway
    if os.getppid() != parent:
        os._exit(0)  # the daemon died before we could ask to die with it


def main() -> None:
    # exec made us dumpable again; executions fork from us, and a leftover one must not be able to read or
    # ptrace the zygote (whose memory every later Python execution starts from).
    set_dumpable(False)
    ctl = socket.socket(fileno=int(sys.argv[1]))
    _die_with_parent(int(sys.argv[2]))
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a slim image without it: children import it themselves if they need it
    pyrunner.warm_up()
    zygote = Zygote(ctl)
    gc.collect()
    gc.freeze()  # keep the warm heap out of the collector so children do not dirty its pages
    ctl.send(b"ready")
    zygote.serve()
