"""Running executions: the registry of live ones, and the loop that carries one from launch to its result.

One thread per execution (the HTTP request's) watches, with a selector: the child's stdout, stderr and
result pipes, its status socket (exit status and rusage arrive there), and a wake pipe that `cancel` writes
to. The loop alone decides when to kill (daemon shutdown aside), so it alone knows whether the child was
already reaped: only while it is not may the pid itself be signalled (its process group may not exist yet,
before the child's setsid). When the child exits, whatever is left of its process group is killed too, so
an execution never leaves background processes behind, nor holds the result back for them.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable

from . import snapshot
from .config import Config
from .launch import Job, Launched, spawn
from .output import COALESCE_DELAY, OutputPipes, StreamCapture
from .spec import INLINE_SCRIPT_MAX, ExecutionSpec
from .zygote import Zygote

RUNNER_JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.js")
RESULT_CAP = 6 * 1024 * 1024
KILL_WAIT = 5.0  # after SIGKILL, how long to wait for the exit status before giving up on it
PIPE_GRACE = 0.5  # after the exit, how long escaped descendants may keep our pipes open
_SIGNAL_HINTS = {
    "SIGKILL": " (out of memory, or a resource limit)",
    "SIGXCPU": " (CPU time limit exceeded)",
    "SIGXFSZ": " (file size limit exceeded)",
}

Emit = Callable[[dict], None]


class DuplicateExecution(Exception):
    """An execution with this id is already running (409)."""


class Execution:
    """One execution from launch to result; `run` is called once, in the request's thread."""

    def __init__(self, spec: ExecutionSpec, config: Config, zygote: Zygote | None) -> None:
        self.spec = spec
        self.config = config
        self.zygote = zygote
        self.pid: int | None = None
        self._reaped = False
        self._killed = False
        self._cancel_requested = False
        self._client_gone = False
        self._emit: Emit | None = None
        self._peer: socket.socket | None = None
        self._started_sent = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- called from other threads (under the registry's lock) --

    def cancel(self) -> None:
        self._cancel_requested = True
        try:
            os.write(self._wake_w, b"c")
        except OSError:
            pass  # the pipe is full: a wake-up is already pending

    def kill_now(self) -> None:
        """Daemon shutdown: kill the group without waiting for the loop."""
        if self.pid is not None:
            _signal_group(self.pid)

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the request's thread --

    def run(self, emit: Emit, peer: socket.socket | None = None) -> dict:
        """Run to the end, streaming `started`, `stdout` and `stderr` events through `emit`.

        Returns the `result` event rather than sending it: the caller sends it once the execution has left the
        registry, so a cancel that follows the result is a clean "not running". `peer` (the client's
        connection) is watched so that a client who hangs up stops the execution even while it prints nothing.
        """
        self._emit = emit
        self._peer = peer
        try:
            return self._run()
        except Exception as exc:  # a bug or an exhausted resource must still end the stream with a result
            import traceback  # only here: its import is not worth a share of every daemon start

            traceback.print_exc()
            if not self._started_sent:
                self._send_started(None)
            return self._result("crashed", None, error=f"executor error: {type(exc).__name__}: {exc}")

    def _send_started(self, pid: int | None) -> None:
        self._started_sent = True
        self._send({"type": "started", "execution_id": self.spec.execution_id, "pid": pid})

    def _run(self) -> dict:
        spec = self.spec
        missing = spec.missing_interpreter(self.config)
        if missing:
            self._send_started(None)
            return self._result("failed", None, error=missing)
        before = snapshot.take(self.config.workspace)
        script_path = self._script_file()
        payload = spec.payload(self.config, RUNNER_JS, script_path)
        stdin = json.dumps(spec.event).encode() if spec.language == "shell" else None
        job = Job(payload, stdin)
        launched = None
        started = time.monotonic()
        try:
            try:
                launched = self._launch(job, payload["env"])
            except OSError as exc:
                self._send_started(None)
                return self._result("crashed", None, error=f"could not start the execution: {exc}")
            self.pid = launched.pid
            self._send_started(launched.pid)
            outcome = self._supervise(job, launched, started)
        finally:
            job.close_all()
            if launched is not None:
                launched.status.close()
            if script_path:
                os.unlink(script_path)
        outcome["files"] = snapshot.diff(before, snapshot.take(self.config.workspace))
        return self._finish(outcome)

    def _script_file(self) -> str | None:
        if self.spec.language != "shell" or len(self.spec.code) <= INLINE_SCRIPT_MAX:
            return None
        fd, path = tempfile.mkstemp(prefix="sandbox-script-", suffix=".sh")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.spec.code)
        return path

    def _launch(self, job: Job, env: dict[str, str]) -> Launched:
        launched = self.zygote.fork(job.child_fds()) if self.zygote is not None else None
        if launched is None:
            launched = spawn(job, env)
        job.close_child_side()
        return launched

    def _send(self, event: dict) -> None:
        if self._client_gone or self._emit is None:
            return
        try:
            self._emit(event)
        except OSError:
            # Nobody will read the result: stop the execution rather than let it run on unobserved.
            self._client_gone = True
            self._cancel_requested = True

    def _kill(self) -> None:
        self._killed = True
        if self.pid is not None:
            _signal_group(self.pid, leader_too=not self._reaped)

    def _supervise(self, job: Job, launched: Launched, started: float) -> dict:
        out = StreamCapture("stdout", self.config.max_output)
        err = StreamCapture("stderr", self.config.max_output)
        exit_info: dict | None = None
        ended: float | None = None
        status_open = True
        give_up: float | None = None
        timed_out = cancelled = False
        deadline = started + self.spec.timeout
        selector = selectors.DefaultSelector()
        try:
            pipes = OutputPipes(
                selector, {job.stdout_r: out, job.stderr_r: err, job.result_r: None}, RESULT_CAP, job.close
            )
            selector.register(launched.status, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            if self._peer is not None:
                selector.register(self._peer, selectors.EVENT_READ)
            while status_open or pipes.open:
                now = time.monotonic()
                if give_up is not None and now >= give_up:
                    break
                waits = [give_up, None if self._killed else deadline, pipes.next_unpark()]
                waits += [c.pending_since + COALESCE_DELAY for c in (out, err) if c.pending_since is not None]
                timeout = max(0.0, min(t for t in waits if t is not None) - now) if any(waits) else None
                for key, _ in selector.select(timeout):
                    now = time.monotonic()
                    if key.fileobj is launched.status:
                        info = _status_message(launched.status)
                        if info is not None and "status" not in info:
                            continue
                        # Exit status (the leader is reaped) or EOF (the zygote died and took the status
                        # with it): either way, kill what is left of the group and drain for a moment.
                        exit_info, ended = info, now
                        self._reaped = info is not None
                        selector.unregister(launched.status)
                        status_open = False
                        self._kill()
                        give_up = ended + PIPE_GRACE
                    elif key.fd == self._wake_r:
                        _drain(self._wake_r)
                    elif key.fileobj is self._peer:
                        # The client sends nothing after its request, so readable means it hung up (or
                        # pipelined a request we will read later: stop watching either way).
                        selector.unregister(self._peer)
                        if _hung_up(self._peer):
                            self._client_gone = True
                            self._cancel_requested = True
                    elif pipes.owns(key.fd):
                        pipes.on_readable(key.fd, now, running=status_open)
                now = time.monotonic()
                pipes.unpark(now, everything=not status_open)
                if status_open and not self._killed:
                    if self._cancel_requested:
                        cancelled = True
                    elif now >= deadline:
                        timed_out = True
                    if cancelled or timed_out:
                        self._kill()
                        give_up = now + KILL_WAIT
                self._flush(out, err, now, final=False)
        finally:
            selector.close()
        self._flush(out, err, time.monotonic(), final=True)
        return {
            "exit": exit_info,
            "duration": (ended or time.monotonic()) - started,
            "result": bytes(pipes.result),
            "result_overflow": pipes.result_overflow,
            "timed_out": timed_out,
            "cancelled": cancelled,
            "stdout": out,
            "stderr": err,
        }

    def _flush(self, out: StreamCapture, err: StreamCapture, now: float, *, final: bool) -> None:
        ready = [c for c in (out, err) if c.pending_since is not None and (final or c.due(now))]
        if final:
            ready = [out, err]
        for capture in sorted(ready, key=lambda c: c.pending_since if c.pending_since is not None else now):
            text = capture.take(final=final)
            if text:
                self._send({"type": capture.name, "data": text})

    def _finish(self, outcome: dict) -> dict:
        info = outcome["exit"]
        exit_code = None
        signalled = None
        if info is not None:
            if os.WIFSIGNALED(info["status"]):
                signalled = _signal_name(os.WTERMSIG(info["status"]))
                exit_code = -os.WTERMSIG(info["status"])
            else:
                exit_code = os.WEXITSTATUS(info["status"])
        doc = _result_doc(outcome["result"], outcome["result_overflow"])
        return_value = None
        if outcome["cancelled"]:
            status, error = "cancelled", "cancelled"
        elif outcome["timed_out"]:
            status, error = "timeout", f"execution exceeded its timeout of {self.spec.timeout:g} s"
        elif info is None:
            status, error = "crashed", "the executor lost track of the execution (its zygote died)"
        elif signalled is not None:
            status, error = "crashed", f"killed by signal {signalled}{_SIGNAL_HINTS.get(signalled, '')}"
        elif "error" in doc:
            status, error = "failed", str(doc["error"])
        elif exit_code != 0:
            status, error = "failed", f"exit status {exit_code}"
        else:
            status, error = "completed", None
            return_value = doc.get("return_value")
        out, err = outcome["stdout"], outcome["stderr"]
        result = self._result(status, exit_code, error=error, return_value=return_value)
        result.update(
            duration_ms=round(outcome["duration"] * 1000, 3),
            cpu_time_ms=round((info["utime"] + info["stime"]) * 1000, 3) if info else None,
            peak_memory_mb=round(info["maxrss"] / 1024, 2) if info else None,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            stdout_bytes=out.kept + out.dropped,
            stderr_bytes=err.kept + err.dropped,
            files=outcome["files"],
        )
        return result

    def _result(
        self, status: str, exit_code: int | None, *, error: str | None, return_value: object = None
    ) -> dict:
        return {
            "type": "result",
            "execution_id": self.spec.execution_id,
            "status": status,
            "exit_code": exit_code,
            "return_value": return_value,
            "error": error,
            "duration_ms": 0.0,
            "cpu_time_ms": None,
            "peak_memory_mb": None,
            "stdout_truncated": False,
            "stderr_truncated": False,
            "files": {"created": [], "modified": [], "deleted": [], "sizes": {}},
        }


class Registry:
    """The running executions by id; its lock also orders `cancel` before an execution's pipes close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Execution] = {}

    def add(self, execution: Execution) -> None:
        with self._lock:
            if execution.spec.execution_id in self._running:
                raise DuplicateExecution(execution.spec.execution_id)
            self._running[execution.spec.execution_id] = execution

    def remove(self, execution: Execution) -> None:
        with self._lock:
            if self._running.get(execution.spec.execution_id) is execution:
                del self._running[execution.spec.execution_id]
            execution.close()

    def cancel(self, execution_id: str) -> bool:
        with self._lock:
            execution = self._running.get(execution_id)
            if execution is None:
                return False
            execution.cancel()
            return True

    def kill_all(self) -> None:
        with self._lock:
            for execution in self._running.values():
                execution.kill_now()

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)


def _signal_group(pid: int, *, leader_too: bool = True) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # no such group: gone already, or the child has not reached its setsid yet
    if leader_too:
        # Only while the leader is unreaped is its pid certainly still ours to signal.
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _status_message(status: socket.socket) -> dict | None:
    try:
        message = status.recv(4096)
    except OSError:
        return None
    return json.loads(message) if message else None


def _hung_up(peer: socket.socket) -> bool:
    try:
        return peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _result_doc(data: bytes, overflow: bool) -> dict:
    if overflow:
        return {"error": f"return value is larger than {RESULT_CAP // (1024 * 1024)} MiB"}
    if not data:
        return {}
    try:
        doc = json.loads(data)
    except ValueError:
        return {"error": "the execution wrote a malformed result"}
    return doc if isinstance(doc, dict) else {}
