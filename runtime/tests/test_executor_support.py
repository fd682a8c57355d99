"""Helpers for the executor tests: start the real daemon as the sandbox would, run code through the client.

The daemon is started exactly as the process backend launches it inside bubblewrap, minus bubblewrap:
`PYTHONPATH=<dir holding executor/> python3 -m executor --socket ... --workspace ...`, so these tests also
prove that the package runs as a top-level package with relative imports. This module holds no tests itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.base import ExecuteRequest
from runtime.client import ExecutorClient
from runtime.events import ExecutionEvent, ExecutionResult, ExecutionStarted, OutputChunk

RUNTIME_DIR = Path(__file__).resolve().parents[1]  # holds executor/
TOKEN = "test-token-5f0c2a9e"
NODE = shutil.which("node") or shutil.which("nodejs")
# The interpreter the daemon runs on; point it at another (say Python 3.9) to run every test against that.
DAEMON_PYTHON = os.environ.get("EXECUTOR_TEST_PYTHON", sys.executable)


class Daemon:
    """A running executor daemon and a client for it."""

    def __init__(self, proc: subprocess.Popen, root: Path, log: Path) -> None:
        self.proc = proc
        self.root = root
        self.socket = root / "executor.sock"
        self.workspace = root / "workspace"
        self.log = log
        self.client = ExecutorClient(str(self.socket), TOKEN, read_timeout=15.0)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def spawn_daemon(
    root: Path,
    *args: str,
    env: dict[str, str] | None = None,
    token: str | None = TOKEN,
    python: str = DAEMON_PYTHON,
    unix: bool = True,
) -> tuple[subprocess.Popen, Path]:
    """Start the daemon without waiting for it; returns the process and its log file."""
    (root / "workspace").mkdir(parents=True, exist_ok=True)
    proc_env = dict(os.environ if env is None else env)
    proc_env["PYTHONPATH"] = str(RUNTIME_DIR)
    proc_env.pop("SANDBOX_EXECUTOR_TOKEN", None)
    if token is not None:
        proc_env["SANDBOX_EXECUTOR_TOKEN"] = token
    log = root / "daemon.log"
    argv = [python, "-m", "executor", "--workspace", str(root / "workspace"), *args]
    if unix and "--socket" not in args:
        argv += ["--socket", str(root / "executor.sock")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=proc_env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/")
    return proc, log


def wait_listening(proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if line.startswith("executor listening on "):
                return line
        if proc.poll() is not None:
            raise AssertionError(f"executor exited with {proc.returncode}:\n{text}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"executor did not start listening:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def short_tmp(prefix: str = "exec-test-") -> Iterator[Path]:
    """A temporary directory with a short path: AF_UNIX socket paths are limited to ~108 bytes."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_daemon(
    *args: str, env: dict[str, str] | None = None, token: str | None = TOKEN, python: str = DAEMON_PYTHON
) -> Iterator[Daemon]:
    with short_tmp() as root:  # not pytest's tmp_path, whose paths can be too long for a socket
        proc, log = spawn_daemon(root, *args, env=env, token=token, python=python)
        daemon = Daemon(proc, root, log)
        try:
            wait_listening(proc, log)
            yield daemon
        finally:
            daemon.stop()


class Run:
    """Everything one execution streamed back: started first, exactly one result last."""

    def __init__(self, events: list[ExecutionEvent]) -> None:
        self.events = events
        started, result = events[0], events[-1]
        assert isinstance(started, ExecutionStarted), events
        assert isinstance(result, ExecutionResult), events
        assert sum(isinstance(e, ExecutionResult) for e in events) == 1, events
        self.started, self.result = started, result
        self.stdout = "".join(e.data for e in events if isinstance(e, OutputChunk) and e.stream == "stdout")
        self.stderr = "".join(e.data for e in events if isinstance(e, OutputChunk) and e.stream == "stderr")

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def value(self) -> Any:
        return self.result.return_value

    @property
    def error(self) -> str | None:
        return self.result.error

    @property
    def exit_code(self) -> int | None:
        return self.result.exit_code

    def files(self, change: str) -> list[str]:
        """Paths of the files the execution created, modified or deleted, in the executor's order."""
        return [f.path for f in self.result.files if f.change == change]


def new_id() -> str:
    return uuid.uuid4().hex


def run(client: ExecutorClient, code: str, language: str = "python", **kwargs: Any) -> Run:
    request = ExecuteRequest(
        execution_id=kwargs.pop("execution_id", new_id()), language=language, code=code, **kwargs
    )
    return Run(list(client.execute(request)))


def process_gone(pid: int) -> bool:
    """True when pid no longer runs (absent, or a zombie waiting for a reaper we do not control)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return process_gone(pid)
