"""The daemon's side of the zygote (see zygote_main.py): start it, ask it to fork, restart it when it dies.

A watcher thread owns the zygote's lifetime: it starts one, waits for it to exit, and starts the next (with a
growing pause if they keep dying young). The daemon does not wait for the first zygote to warm up before it
listens: `start` returns as soon as the process exists. Executions never wait for a zygote, neither the first
one warming up nor a restart: while none is ready, `fork` returns None and the launcher spawns a fresh
interpreter instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

from .launch import PACKAGE, PACKAGE_ROOT, Launched

READY_TIMEOUT = 10.0
# How long `start` waits for the first zygote process to exist (not to be warm: that happens while we listen).
SPAWN_WAIT = 5.0
# The zygote answers a fork request right after fork(); a silent zygote is wedged and gets replaced.
REPLY_TIMEOUT = 5.0

# `python -c` puts "" (the current directory) first on sys.path; dropping it before any import keeps a file in
# the workspace (say, json.py) from being imported by the zygote itself.
_BOOTSTRAP = (
    "import sys; sys.path[:] = [{root!r}] + [p for p in sys.path if p]; "
    "import {pkg}.zygote_main as z; del sys.path[0]; z.main()"
)


class Zygote:
    """Handle on the current zygote process, if any."""

    def __init__(self, env: dict[str, str], *, gate: str | None = None) -> None:
        self._env = env
        # Tests only: a FIFO the first zygote opens before its imports, so it stays "warming up" until the
        # test opens the FIFO for writing. Production never sets it (server.main reads it from the environment).
        self._gate = gate
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self._warming: subprocess.Popen | None = None  # started, not yet ready: stop() must kill it too
        self._stopping = False
        self._spawned = threading.Event()  # the first zygote process exists, or could not be started
        self.restarts = -1  # the first start is not a restart

    @property
    def pid(self) -> int | None:
        """The ready zygote's pid; None while it warms up, after it died, or when none could start."""
        with self._lock:
            return self._proc.pid if self._ctl is not None and self._proc is not None else None

    def start(self) -> None:
        """Start the watcher; return once the first zygote process exists, without waiting for it to be warm.

        Its imports take tens of milliseconds that a cold sandbox start need not wait for, so the daemon
        listens meanwhile. Waiting for the process itself (a millisecond or two) keeps the sandbox's process
        set the same from its first /health on. The watcher thread spawns every zygote and lives as long as
        the daemon: that matters because the zygote's PR_SET_PDEATHSIG fires when the *thread* that forked it
        ends, not only the process.
        """
        threading.Thread(target=self._watch, name="zygote-watcher", daemon=True).start()
        self._spawned.wait(SPAWN_WAIT)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            procs, ctl = [self._proc, self._warming], self._ctl
            self._ctl = None
        if ctl is not None:
            ctl.close()
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.kill()

    def fork(self, fds: list[int]) -> Launched | None:
        """Ask the zygote to fork a child with these fds (stdin, stdout, stderr, result, payload).

        None when no zygote is ready: the caller then spawns a fresh interpreter. That holds while the first
        zygote warms up, too. An execution that comes right after the daemon starts listening finds the
        zygote with most of its imports still ahead; measured in a 1-CPU container, a fresh interpreter
        started then finishes as soon as waiting for the zygote would (about 50 ms either way), and sooner
        when the host is busy, so nothing waits.
        """
        with self._lock:
            ctl = self._ctl
        if ctl is None:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(ctl, [b"fork"], [theirs.fileno(), *fds])
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()  # in flight, the message holds its own reference
        ours.settimeout(REPLY_TIMEOUT)
        try:
            reply = ours.recv(4096)
        except OSError:
            reply = b""
            self._kill(ctl)
        if not reply:
            ours.close()  # it died (or was wedged) before forking: nothing of this execution ran
            return None
        message = json.loads(reply)
        if "pid" not in message:
            ours.close()
            return None
        ours.settimeout(None)
        return Launched(message["pid"], ours, "zygote")

    def _kill(self, ctl: socket.socket) -> None:
        with self._lock:
            if self._ctl is ctl and self._proc is not None:
                self._proc.kill()

    def _spawn(self) -> tuple[subprocess.Popen, socket.socket] | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = _BOOTSTRAP.format(root=PACKAGE_ROOT, pkg=PACKAGE)
        if self._gate and self.restarts < 0:
            code = f"open({self._gate!r}, 'rb').close(); {code}"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
                env=self._env,
                cwd="/",  # children chdir to the workspace; the zygote has no business there
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            sys.stderr.write(f"executor: cannot start the zygote: {exc}\n")
            ours.close()
            return None
        finally:
            theirs.close()
            self._spawned.set()
        with self._lock:
            self._warming = proc
            stopping = self._stopping
        ours.settimeout(READY_TIMEOUT)
        try:
            ready = not stopping and ours.recv(16) == b"ready"
        except OSError:
            ready = False
        with self._lock:
            self._warming = None
            stopping = self._stopping
        if not ready:
            if not stopping:
                sys.stderr.write("executor: the zygote did not become ready\n")
            proc.kill()
            proc.wait()
            ours.close()
            return None
        ours.settimeout(None)
        return proc, ours

    def _watch(self) -> None:
        pause = 0.0
        while True:
            with self._lock:
                if self._stopping:
                    return
            started = time.monotonic()
            spawned = self._spawn()
            if spawned is not None:
                proc, ctl = spawned
                with self._lock:
                    if self._stopping:
                        proc.kill()
                        ctl.close()
                        return
                    self._proc, self._ctl = proc, ctl
                    self.restarts += 1
                proc.wait()
                with self._lock:
                    if self._ctl is ctl:
                        self._ctl = None
                ctl.close()
            # A zygote that lived a while gets replaced at once; one that keeps dying young, ever more slowly.
            pause = 0.0 if time.monotonic() - started > 10 else min(max(pause * 2, 0.1), 5.0)
            time.sleep(pause)
