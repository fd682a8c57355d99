"""An in-memory runtime for control-plane unit tests: sandboxes are dictionary entries and nothing runs.

It keeps the promises of the real backends that the control plane relies on: create returns a handle or
raises RuntimeFailure, destroy is idempotent, inspect and list_managed agree with what was created, the file
calls work on an in-memory workspace, and an execution yields ExecutionStarted, its output, then exactly one
ExecutionResult. It never runs the code it is given. An execution ends as the test said it would, with
`queue_outcome()`; with nothing queued it completes with exit code 0, no output and no return value. Tests
about what code does belong on a real backend (the `sessions_on_process` fixture).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import deque
from collections.abc import Iterator, Mapping
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
from runtime.events import (
    ExecutionEvent,
    ExecutionMetrics,
    ExecutionResult,
    ExecutionStarted,
    FileChange,
    OutputChunk,
    ResultStatus,
)
from runtime.listing import walk_listing


@dataclass(frozen=True)
class FakeOutcome:
    """How one execution ends, as a test states it.

    `files` maps workspace paths to the bytes the execution leaves there (None: it deleted the file); they
    are written to the fake workspace and reported in the result with their sizes. `failure` is raised by
    execute() before any event (an executor that refuses or cannot be reached); `breaks` ends the stream
    after the output without a result, as the real client does when it loses the executor.
    """

    stdout: str = ""
    stderr: str = ""
    status: ResultStatus = "completed"
    exit_code: int | None = None  # by default 0 when completed, -9 when timed out or crashed, else 1
    return_value: Any = None
    error: str | None = None
    files: Mapping[str, bytes | None] = field(default_factory=dict)
    failure: RuntimeFailure | None = None
    breaks: bool = False


@dataclass
class FakeSandbox:
    """One fake sandbox: its spec, state, workspace (path -> bytes) and the executions it was sent."""

    spec: SandboxSpec
    handle: SandboxHandle
    resources: Resources
    running: bool = True
    files: dict[str, bytes] = field(default_factory=dict)
    executions: list[ExecuteRequest] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)


class FakeRuntime(Runtime):
    """Sandboxes as dictionary entries; outcomes and failures are injected by the test."""

    name = "fake"

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sandboxes: dict[str, FakeSandbox] = {}
        self._create_failures: deque[RuntimeFailure] = deque()
        self._outcomes: dict[str | None, deque[FakeOutcome]] = {}
        self._lock = threading.Lock()

    # -- what the test states --

    def fail_next_create(
        self, message: str = "fake runtime: create failed", *, permanent: bool = False, times: int = 1
    ) -> None:
        """Make the next `times` creates raise RuntimeFailure(message)."""
        with self._lock:
            self._create_failures.extend(RuntimeFailure(message, permanent=permanent) for _ in range(times))

    def queue_outcome(self, session_id: str | None = None, **outcome: Any) -> None:
        """Decide how the next execution of `session_id` (None: of any session) ends; keyword arguments are
        FakeOutcome's fields. A session's own queue is served before the shared one."""
        with self._lock:
            self._outcomes.setdefault(session_id, deque()).append(FakeOutcome(**outcome))

    def lose(self, handle_or_id: SandboxHandle | str, *, vanish: bool = False) -> None:
        """The sandbox dies behind the control plane's back: stopped, or (vanish=True) gone entirely."""
        session_id = handle_or_id if isinstance(handle_or_id, str) else handle_or_id.session_id
        with self._lock:
            if vanish:
                self.sandboxes.pop(session_id, None)
            elif session_id in self.sandboxes:
                self.sandboxes[session_id].running = False

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
            return handle

    def destroy(self, handle: SandboxHandle) -> None:
        with self._lock:
            self.sandboxes.pop(handle.session_id, None)

    def inspect(self, handle: SandboxHandle) -> SandboxState:
        sandbox = self.sandboxes.get(handle.session_id)
        if sandbox is None:
            return SandboxState(exists=False, running=False, detail="no such sandbox")
        if not sandbox.running:
            return SandboxState(exists=True, running=False, detail="the executor process has exited")
        return SandboxState(exists=True, running=True, detail="running", cpu_percent=0.0, memory_mb=24.0)

    def list_managed(self) -> list[SandboxHandle]:
        return [sandbox.handle for sandbox in list(self.sandboxes.values())]

    def executor(self, handle: SandboxHandle) -> FakeExecutorClient:
        return FakeExecutorClient(self, handle)

    def update_resources(self, handle: SandboxHandle, resources: Resources) -> None:
        self._live(handle).resources = resources

    def install_packages(self, handle: SandboxHandle, request: PackageInstall) -> InstalledPackages:
        """Installs each requirement at its pinned version (else 1.0.0); a pin to 0.0.0 fails as pip would,
        leaving the earlier set in place."""
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

    def _next_outcome(self, session_id: str) -> FakeOutcome:
        with self._lock:
            for key in (session_id, None):
                queue = self._outcomes.get(key)
                if queue:
                    return queue.popleft()
        return FakeOutcome()


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

    def execute(self, request: ExecuteRequest) -> Iterator[ExecutionEvent]:
        # Refusals raise here, before iteration, as the real client's do.
        sandbox = self.runtime._live(self.handle)
        if any(r.execution_id == request.execution_id for r in sandbox.executions):
            raise RuntimeFailure(
                f"executor at {self.endpoint}: execute answered 409: execution {request.execution_id} exists",
                permanent=True,
            )
        sandbox.executions.append(request)
        outcome = self.runtime._next_outcome(self.handle.session_id)
        if outcome.failure is not None:
            raise outcome.failure
        return self._stream(sandbox, request, outcome)

    def _stream(
        self, sandbox: FakeSandbox, request: ExecuteRequest, outcome: FakeOutcome
    ) -> Iterator[ExecutionEvent]:
        yield ExecutionStarted(execution_id=request.execution_id, pid=2)
        if outcome.stdout:
            yield OutputChunk(stream="stdout", data=outcome.stdout)
        if outcome.stderr:
            yield OutputChunk(stream="stderr", data=outcome.stderr)
        if outcome.breaks:
            raise RuntimeFailure(f"executor at {self.endpoint} ended the stream without a result")
        exit_code = outcome.exit_code
        if exit_code is None:
            exit_code = {"completed": 0, "timeout": -9, "crashed": -9}.get(outcome.status, 1)
        yield ExecutionResult(
            execution_id=request.execution_id,
            status=outcome.status,
            exit_code=exit_code,
            return_value=outcome.return_value,
            error=outcome.error,
            metrics=ExecutionMetrics(
                duration_ms=1.0,
                cpu_time_ms=1.0,
                peak_memory_mb=10.0,
                stdout_bytes=len(outcome.stdout.encode()),
                stderr_bytes=len(outcome.stderr.encode()),
            ),
            files=_apply(sandbox.files, outcome.files),
        )

    def cancel(self, execution_id: str) -> bool:
        self.runtime._live(self.handle)
        return False  # fake executions have ended by the time anyone could cancel them

    def list_files(self, path: str = "") -> list[dict[str, Any]]:
        sandbox = self.runtime._live(self.handle)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        now = dt.datetime.now(dt.UTC).isoformat()
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sandbox.files.items():
            if not name.startswith(prefix):
                continue
            head, _, rest = name[len(prefix) :].partition("/")
            entries[head] = {
                "name": head,
                "path": prefix + head,
                "size": 0 if rest else len(data),
                "modified_time": now,
                "is_dir": bool(rest),
            }
        if prefix and not entries:
            raise FileNotFoundError(path)
        return [entries[name] for name in sorted(entries)]

    def walk_files(self, path: str = "", *, limit: int) -> tuple[list[dict[str, Any]], bool]:
        return walk_listing(self.list_files, path.strip("/"), limit)

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


def _apply(workspace: dict[str, bytes], writes: Mapping[str, bytes | None]) -> tuple[FileChange, ...]:
    """Write an outcome's files into the workspace; the changes in the executor's order and with its sizes."""
    changes: dict[str, list[FileChange]] = {"created": [], "modified": [], "deleted": []}
    for path in sorted(writes):
        data, existed = writes[path], path in workspace
        if data is None:
            if existed:
                del workspace[path]
                changes["deleted"].append(FileChange(path, "deleted"))
            continue
        workspace[path] = data
        change = FileChange(path, "modified" if existed else "created", len(data))
        changes[change.change].append(change)
    return (*changes["created"], *changes["modified"], *changes["deleted"])
