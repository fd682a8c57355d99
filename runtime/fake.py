"""An in-memory runtime for control-plane unit tests: no processes, with scripting and failure injection.

It keeps the promises of the real backends that the control plane relies on (create returns a handle or
raises RuntimeFailure, destroy is idempotent, inspect and list_managed agree with what was created, an
execution streams `started`, output, then exactly one `result`), so services can be tested without a sandbox.
It never runs the code it is given: a few obvious forms are understood (`print(<literal>)`,
`console.log(<literal>)`, `echo words`, `raise Error("...")`, a handler returning a literal or the event);
anything else completes silently unless a test scripts the outcome with `script()`.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from runtime.base import (
    ExecuteRequest,
    InstalledPackages,
    PackageInstall,
    Resources,
    Runtime,
    RuntimeFailure,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
)
from runtime.client import ExecutorClient

_JS_LOG = re.compile(r"^\s*console\.log\((.*)\);?\s*$")
_ECHO = re.compile(r"^\s*echo\s+(.*)$")


@dataclass
class FakeSandbox:
    """One fake sandbox: its spec, state and workspace (path -> bytes)."""

    spec: SandboxSpec
    handle: SandboxHandle
    resources: Resources
    running: bool = True
    files: dict[str, bytes] = field(default_factory=dict)
    executions: list[ExecuteRequest] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)


@dataclass
class _Script:
    events: list[dict[str, Any]] | None = None
    failure: BaseException | None = None
    result: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""


class FakeRuntime(Runtime):
    """Sandboxes as dictionary entries. Inject failures with `fail_next_create`, `lose`, `script`."""

    name = "fake"

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.created: list[str] = []
        self.destroyed: list[str] = []
        self._create_failures: deque[RuntimeFailure] = deque()
        self._scripts: dict[str | None, deque[_Script]] = {}
        self._lock = threading.Lock()

    # -- failure injection and scripting --

    @property
    def fail_next_create(self) -> Callable[..., None]:
        """Make the next create(s) raise: `rt.fail_next_create = "engine down"` (or a RuntimeFailure; None
        clears), or `rt.fail_next_create("engine down", permanent=True, times=2)`."""
        return self._schedule_create_failure

    @fail_next_create.setter
    def fail_next_create(self, failure: str | RuntimeFailure | None) -> None:
        if failure is None:
            self._create_failures.clear()
        elif isinstance(failure, RuntimeFailure):
            self._create_failures.append(failure)
        else:
            self._schedule_create_failure(str(failure))

    def _schedule_create_failure(
        self, message: str = "fake runtime: create failed", *, permanent: bool = False, times: int = 1
    ) -> None:
        for _ in range(times):
            self._create_failures.append(RuntimeFailure(message, permanent=permanent))

    def lose(self, handle_or_id: SandboxHandle | str, *, vanish: bool = False) -> None:
        """The sandbox dies behind the control plane's back: stopped, or (vanish=True) gone entirely."""
        session_id = handle_or_id if isinstance(handle_or_id, str) else handle_or_id.session_id
        with self._lock:
            if vanish:
                self.sandboxes.pop(session_id, None)
            elif session_id in self.sandboxes:
                self.sandboxes[session_id].running = False

    def script(
        self,
        *,
        session_id: str | None = None,
        events: list[dict[str, Any]] | None = None,
        failure: BaseException | None = None,
        stdout: str = "",
        stderr: str = "",
        **result: Any,
    ) -> None:
        """Decide the outcome of the next execution (of `session_id`, or of any session).

        `events` replaces the stream entirely (send your own `result`, or leave it out to simulate a stream
        that breaks); `failure` is raised by execute(); otherwise `stdout`/`stderr` and result fields such as
        status="failed", error="...", return_value=... shape a normal stream.
        """
        with self._lock:
            self._scripts.setdefault(session_id, deque()).append(
                _Script(events=events, failure=failure, result=result, stdout=stdout, stderr=stderr)
            )

    # -- Runtime --

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        with self._lock:
            if self._create_failures:
                raise self._create_failures.popleft()
            existing = self.sandboxes.get(spec.session_id)
            if existing is not None and existing.running:
                raise RuntimeFailure(
                    f"a sandbox for session {spec.session_id} is already running", permanent=True
                )
            handle = SandboxHandle(
                backend=self.name,
                sandbox_id=f"fake-{spec.session_id}",
                session_id=spec.session_id,
                endpoint=f"fake://{spec.session_id}",
                token=spec.token,
                node="fake-node",
                workspace_path=f"/fake/{spec.session_id}/workspace",
            )
            self.sandboxes[spec.session_id] = FakeSandbox(spec=spec, handle=handle, resources=spec.resources)
            self.created.append(spec.session_id)
            return handle

    def destroy(self, handle: SandboxHandle) -> None:
        with self._lock:
            if self.sandboxes.pop(handle.session_id, None) is not None:
                self.destroyed.append(handle.session_id)

    def inspect(self, handle: SandboxHandle) -> SandboxState:
        sandbox = self.sandboxes.get(handle.session_id)
        if sandbox is None:
            return SandboxState(exists=False, running=False, detail="no such sandbox")
        if not sandbox.running:
            return SandboxState(exists=True, running=False, detail="the executor process has exited")
        return SandboxState(
            exists=True,
            running=True,
            detail="running",
            cpu_percent=0.0,
            memory_mb=float(min(24, sandbox.resources.memory_mb)),
        )

    def list_managed(self) -> list[SandboxHandle]:
        return [sandbox.handle for sandbox in list(self.sandboxes.values())]

    def executor(self, handle: SandboxHandle) -> FakeExecutorClient:
        return FakeExecutorClient(self, handle)

    def update_resources(self, handle: SandboxHandle, resources: Resources) -> None:
        sandbox = self._live(handle)
        sandbox.resources = resources

    def check(self) -> None:
        return None

    def install_packages(self, handle: SandboxHandle, request: PackageInstall) -> InstalledPackages:
        """Pretend-installs each requirement at its pinned version (else 1.0.0); a pin to 0.0.0 fails as pip
        would, leaving the earlier set in place."""
        sandbox = self._live(handle)
        wanted: dict[str, str] = {}
        for requirement in request.requirements:
            name, _, version = requirement.partition("==")
            if version == "0.0.0":
                raise RuntimeFailure(
                    f"ERROR: No matching distribution found for {requirement}", permanent=True
                )
            wanted[name] = version or "1.0.0"
        sandbox.packages = wanted
        return InstalledPackages(packages=tuple(sorted(wanted.items())), log="fake install")

    # -- used by the client --

    def _live(self, handle: SandboxHandle) -> FakeSandbox:
        sandbox = self.sandboxes.get(handle.session_id)
        if sandbox is None or not sandbox.running:
            raise RuntimeFailure(f"executor at {handle.endpoint} is unreachable: the socket does not exist")
        if sandbox.spec.token != handle.token:
            raise RuntimeFailure(f"executor at {handle.endpoint} rejected the token (401)", permanent=True)
        return sandbox

    def _next_script(self, session_id: str) -> _Script | None:
        with self._lock:
            for key in (session_id, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return None


class FakeExecutorClient(ExecutorClient):
    """The ExecutorClient interface over a FakeRuntime sandbox; every public method is overridden."""

    def __init__(self, runtime: FakeRuntime, handle: SandboxHandle) -> None:  # no transport to set up
        self.runtime = runtime
        self.handle = handle
        self.endpoint = handle.endpoint
        self.token = handle.token
        self.connect_timeout = self.read_timeout = 0.0

    def health(self) -> dict[str, Any]:
        self.runtime._live(self.handle)
        return {"status": "ok", "version": "fake", "active_executions": 0}

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        return self.health()

    def execute(self, request: ExecuteRequest) -> Iterator[dict[str, Any]]:
        sandbox = self.runtime._live(self.handle)
        if any(r.execution_id == request.execution_id for r in sandbox.executions):
            raise RuntimeFailure(
                f"executor at {self.endpoint}: execution {request.execution_id} exists", permanent=True
            )
        sandbox.executions.append(request)
        script = self.runtime._next_script(self.handle.session_id)
        if script is not None and script.failure is not None:
            raise script.failure
        if script is not None and script.events is not None:
            return iter([dict(event) for event in script.events])
        if script is not None:
            outcome = {
                "stdout": script.stdout,
                "stderr": script.stderr,
                "status": "completed",
                **script.result,
            }
        else:
            outcome = _interpret(request)
        return iter(_stream(request, outcome))

    def cancel(self, execution_id: str) -> bool:
        self.runtime._live(self.handle)
        return False  # fake executions finish before execute() returns

    def list_files(self, path: str = "") -> list[dict[str, Any]]:
        sandbox = self.runtime._live(self.handle)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        now = dt.datetime.now(dt.UTC).isoformat()
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sandbox.files.items():
            if not name.startswith(prefix):
                continue
            head, _, rest = name[len(prefix) :].partition("/")
            is_dir = bool(rest)
            size = 0 if is_dir else len(data)
            entries[head] = {
                "name": head,
                "path": prefix + head,
                "size": size,
                "modified_time": now,
                "is_dir": is_dir,
            }
        if prefix and not entries:
            raise FileNotFoundError(path)
        return [entries[name] for name in sorted(entries)]

    def download(self, path: str) -> Iterator[bytes]:
        data = self.runtime._live(self.handle).files.get(path.strip("/"))
        if data is None:
            raise FileNotFoundError(path)
        return iter([data] if data else [])

    def upload(self, path: str, fileobj: BinaryIO, size: int) -> dict[str, Any]:
        sandbox = self.runtime._live(self.handle)
        data = fileobj.read(size)
        if len(data) != size:
            raise ValueError(f"upload of {path!r}: the file ended after {len(data)} of {size} bytes")
        sandbox.files[path.strip("/")] = data
        return {"path": path.strip("/"), "size": size}

    def delete(self, path: str) -> None:
        sandbox = self.runtime._live(self.handle)
        key = path.strip("/")
        doomed = [name for name in sandbox.files if name == key or name.startswith(key + "/")]
        if not doomed:
            raise FileNotFoundError(path)
        for name in doomed:
            del sandbox.files[name]


def _stream(request: ExecuteRequest, outcome: dict[str, Any]) -> list[dict[str, Any]]:
    stdout, stderr = outcome.pop("stdout", ""), outcome.pop("stderr", "")
    events: list[dict[str, Any]] = [{"type": "started", "execution_id": request.execution_id, "pid": 2}]
    if stdout:
        events.append({"type": "stdout", "data": stdout})
    if stderr:
        events.append({"type": "stderr", "data": stderr})
    status = outcome.get("status", "completed")
    result = {
        "type": "result",
        "execution_id": request.execution_id,
        "status": status,
        "exit_code": 0 if status == "completed" else (-9 if status in ("timeout", "crashed") else 1),
        "return_value": None,
        "error": None,
        "duration_ms": 1.0,
        "cpu_time_ms": 1.0,
        "peak_memory_mb": 10.0,
        "stdout_truncated": False,
        "stderr_truncated": False,
        "files": {"created": [], "modified": [], "deleted": []},
        "stdout_bytes": len(stdout.encode()),
        "stderr_bytes": len(stderr.encode()),
    }
    result.update(outcome)
    events.append(result)
    return events


def _interpret(request: ExecuteRequest) -> dict[str, Any]:
    """Understand a few obvious programs; everything else completes with no output."""
    if request.language == "python":
        return _interpret_python(request)
    out = []
    for line in request.code.splitlines():
        match = (_JS_LOG if request.language == "javascript" else _ECHO).match(line)
        if match and request.language == "javascript":
            try:
                out.append(str(_literal(match.group(1))))
            except ValueError:
                continue
        elif match:
            out.append(match.group(1).strip().strip("'\""))
    return {"stdout": "".join(line + "\n" for line in out)}


def _interpret_python(request: ExecuteRequest) -> dict[str, Any]:
    try:
        tree = ast.parse(request.code)
    except SyntaxError as exc:
        return {"status": "failed", "error": f"SyntaxError: {exc.msg}", "stderr": f"SyntaxError: {exc.msg}\n"}
    stdout: list[str] = []
    handler = None
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and _called(node.value) == "print":
            try:
                stdout.append(" ".join(str(_literal(arg)) for arg in node.value.args) + "\n")
            except ValueError:
                continue
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            name = _called(node.exc) or "Exception"
            message = " ".join(str(_literal(a)) for a in node.exc.args if isinstance(a, ast.Constant))
            error = f"{name}: {message}" if message else name
            return {
                "stdout": "".join(stdout),
                "status": "failed",
                "error": error,
                "stderr": f"Traceback (most recent call last):\n{error}\n",
            }
        elif isinstance(node, ast.While) and isinstance(node.test, ast.Constant) and node.test.value:
            time.sleep(0)  # an endless loop: the real executor would stop it at the timeout
            return {
                "stdout": "".join(stdout),
                "status": "timeout",
                "error": f"execution exceeded its timeout of {request.timeout:g} s",
            }
        elif isinstance(node, ast.FunctionDef) and node.name in (
            request.entrypoint or "handler",
            "lambda_handler",
        ):
            handler = node
    result: dict[str, Any] = {"stdout": "".join(stdout)}
    if handler is not None:
        for statement in handler.body:
            if isinstance(statement, ast.Return) and statement.value is not None:
                result["return_value"] = _returned(statement.value, request.event)
                break
    return result


def _called(call: ast.Call) -> str | None:
    return call.func.id if isinstance(call.func, ast.Name) else None


def _literal(node: Any) -> Any:
    text = node if isinstance(node, str) else None
    try:
        return ast.literal_eval(text.strip() if text is not None else node)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise ValueError("not a literal") from exc


def _returned(node: ast.expr, event: Any) -> Any:
    event = event if event is not None else {}
    if isinstance(node, ast.Name) and node.id == "event":
        return event
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "event"
        and isinstance(node.slice, ast.Constant)
    ):
        return event.get(node.slice.value) if isinstance(event, dict) else None
    try:
        return _literal(node)
    except ValueError:
        return None
