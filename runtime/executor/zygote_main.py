"""The zygote: a warm, single-threaded Python process that forks one child per execution when the daemon asks.

Protocol (both sockets are AF_UNIX SOCK_SEQPACKET, so every message arrives whole, with its fds):
- the control socket (inherited, fd number in argv[1]) carries one message per execution: b"fork" plus six
  fds via SCM_RIGHTS: a status socket, then the child's stdin, stdout, stderr, result and payload fds;
- the zygote forks; the child closes everything of the zygote's and becomes the execution (child.start);
- on the status socket the zygote sends {"pid": N} right after the fork (or {"error": ...} when fork fails)
  and, once it has reaped the child with wait4, {"status": S, "utime": .., "stime": .., "maxrss": ..}.
The zygote sends b"ready" on the control socket once its imports are done, and exits when that socket closes.
It stays single-threaded: forking a process with threads could copy a lock some other thread held.
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
        try:
            pid = os.fork()
        except OSError as exc:
            self._send(status, {"error": f"fork failed: {exc}"})
            status.close()
            for fd in fds:
                os.close(fd)
            return
        if pid == 0:
            self._become_child(status, fds)
        for fd in fds:
            os.close(fd)
        self.children[pid] = status
        self._send(status, {"pid": pid})

    def _become_child(self, status: socket.socket, fds: list[int]) -> None:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Close the zygote's objects properly (not just their fds), so none of them can later close a
            # number that user code has reused.
            self.selector.close()
            self.ctl.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            status.close()
            for other in self.children.values():
                other.close()
            self.children.clear()
            child.start(fds)
        finally:
            os._exit(127)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
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
