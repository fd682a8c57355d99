"""The backend contract: every test here runs once per backend this machine can run (`backend`).

A backend missing here (no bubblewrap, no Docker engine or image) is skipped with the missing part named;
CI has them all, and SANDBOX_REQUIRE_DOCKER=1 turns a missing engine into a failure there. Tests read
executions through `run_code` (typed events), never the executor's wire format.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.base import SandboxHandle
from runtime.tests.conftest import Outcome, destroy_all, run_code
from runtime.tests.contract.backends import Backend, open_backend

BACKEND_PARAMS = [
    pytest.param("process", marks=pytest.mark.bwrap),
    pytest.param("docker", marks=pytest.mark.docker),
]
# The Kubernetes backend needs a cluster (KUBECONFIG); it is collected only when asked for.
if os.environ.get("SANDBOX_K8S_TESTS") == "1":
    BACKEND_PARAMS.append(pytest.param("kubernetes", marks=pytest.mark.kubernetes))


@pytest.fixture(scope="session", params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    opened = open_backend(request.param)
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def _destroy_what_the_test_made(backend: Backend) -> Iterator[None]:
    yield
    backend.destroy_made()


@pytest.fixture
def scratch_dir(backend: Backend) -> Iterator[str]:
    """A data dir of the test's own, short (socket paths stay under 108 bytes); whatever sandboxes a test
    left in it are destroyed afterwards, then it is removed."""
    path = tempfile.mkdtemp(prefix="sbc-", dir="/tmp")
    yield path
    runtime = backend.build(data_dir=path)
    destroy_all([(runtime, handle) for handle in runtime.list_managed()])
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared(backend: Backend) -> Iterator[SandboxHandle]:
    """One sandbox for the tests that change nothing in it another test looks at."""
    handle = backend.runtime.create(backend.spec())
    yield handle
    backend.runtime.destroy(handle)


def changed_files(outcome: Outcome) -> dict[str, tuple[str, int | None]]:
    """What the execution reports it changed in the workspace: path -> (change, size in bytes)."""
    return {change.path: (change.change, change.size) for change in outcome.result.files}


def run_json(backend: Backend, handle: SandboxHandle, code: str, **kwargs: Any) -> Any:
    """Run `code`, which prints one JSON document, and return it; the execution must complete."""
    kwargs.setdefault("timeout", 30)
    out = run_code(backend.runtime, handle, code, **kwargs)
    assert out.status == "completed", (out.result, out.stderr[-2000:])
    return json.loads(out.stdout)


def still_serves(backend: Backend, handle: SandboxHandle) -> None:
    """The sandbox answers /health and runs a normal execution."""
    assert backend.runtime.executor(handle).health()["status"] == "ok"
    out = run_code(backend.runtime, handle, "print(6 * 7)")
    assert out.status == "completed" and out.stdout == "42\n", out.result
