"""Shared fixtures for runtime tests: a ProcessRuntime in a short-lived data dir, sandboxes, and a runner.

The data dir lives directly under /tmp (not pytest's deep tmp_path): a Unix socket path must stay under 108
bytes, and `<data>/sandboxes/<session>/run/executor.sock` under tmp_path would not.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from runtime.base import ExecuteRequest, Resources, SandboxHandle, SandboxSpec
from runtime.events import ExecutionEvent, ExecutionResult, OutputChunk
from runtime.process import ProcessRuntime

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


@dataclass
class Outcome:
    """One execution as the tests look at it: the result plus the concatenated streams."""

    result: ExecutionResult
    stdout: str = ""
    stderr: str = ""
    events: list[ExecutionEvent] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.result.status


def run_code(
    runtime: Any,
    handle: SandboxHandle,
    code: str,
    *,
    language: str = "python",
    timeout: float = 20.0,
    event: Any = None,
    env: dict[str, str] | None = None,
    execution_id: str | None = None,
) -> Outcome:
    events = list(
        runtime.execute(
            handle,
            ExecuteRequest(
                execution_id=execution_id or uuid.uuid4().hex,
                language=language,
                code=code,
                event=event,
                timeout=timeout,
                env=env or {},
            ),
        )
    )
    result = events[-1]
    assert isinstance(result, ExecutionResult), events[-3:]
    outcome = Outcome(result=result, events=events)
    outcome.stdout = "".join(e.data for e in events if isinstance(e, OutputChunk) and e.stream == "stdout")
    outcome.stderr = "".join(e.data for e in events if isinstance(e, OutputChunk) and e.stream == "stderr")
    return outcome


@pytest.fixture
def data_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="sbx-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def process_runtime(data_dir: str) -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime(data_dir=data_dir)
    yield runtime
    destroy_all([(runtime, handle) for handle in runtime.list_managed()])


def destroy_all(made: list[tuple[Any, SandboxHandle]]) -> None:
    """Destroy every (runtime, handle), even if one destroy fails: a leaked sandbox outlives the test run."""
    errors = []
    for runtime, handle in made:
        try:
            runtime.destroy(handle)
        except Exception as exc:  # noqa: BLE001 - reported below, after the others are gone
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def make_sandbox(process_runtime: ProcessRuntime) -> Callable[..., SandboxHandle]:
    """Create a sandbox (destroyed with the runtime fixture); keyword arguments go to Resources."""

    def make(
        *, env: dict[str, str] | None = None, runtime: ProcessRuntime | None = None, **resources: Any
    ) -> SandboxHandle:
        spec = SandboxSpec(
            session_id=f"s{uuid.uuid4().hex[:12]}",
            image="python-basic",
            token=secrets.token_urlsafe(24),
            resources=Resources(**resources),
            env=env or {},
        )
        return (runtime or process_runtime).create(spec)

    return make


def host_processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) host processes whose command line contains `text`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(int(name))
    return found
