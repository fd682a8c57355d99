"""The runtime seam: one abstract base class, the dataclasses that cross it, and its one error type."""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from runtime.events import ExecutionEvent

if TYPE_CHECKING:
    from runtime.client import ExecutorClient


# What a backend accepts as a sandbox's name on disk or in an engine: no "." or "..", no separators.
SESSION_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


class RuntimeFailure(Exception):
    """A sandbox operation failed.

    `permanent=True` means retrying cannot help (missing image, bad spec); otherwise the caller may retry
    (engine briefly down, executor not yet listening).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class Resources:
    """Limits for one sandbox. cpu in cores, memory and disk in MiB."""

    cpu: float = 1.0
    memory_mb: int = 512
    disk_mb: int = 1024
    max_processes: int = 128


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to create one sandbox."""

    session_id: str
    image: str
    token: str
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxHandle:
    """How to find a sandbox again; plain strings so it can be stored on the session row.

    `sandbox_id` is the backend's own name (container id, pod name, run directory); `endpoint` is the
    executor address (a Unix socket path or an http URL); `node` is the host or node it runs on.
    """

    backend: str
    sandbox_id: str
    session_id: str
    endpoint: str
    token: str
    node: str = ""
    workspace_path: str = ""


@dataclass(frozen=True)
class SandboxState:
    """What the backend sees of a sandbox right now."""

    exists: bool
    running: bool
    detail: str = ""
    cpu_percent: float | None = None
    memory_mb: float | None = None


@dataclass(frozen=True)
class ExecuteRequest:
    """One execution as the executor receives it (DESIGN.md §5)."""

    execution_id: str
    language: str
    code: str
    event: Any = None
    timeout: float = 30.0
    env: Mapping[str, str] = field(default_factory=dict)
    entrypoint: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "execution_id": self.execution_id,
            "language": self.language,
            "code": self.code,
            "event": self.event if self.event is not None else {},
            "timeout": self.timeout,
            "env": dict(self.env),
        }
        if self.entrypoint:
            body["entrypoint"] = self.entrypoint
        return body


@dataclass(frozen=True)
class PackageInstall:
    """One install of a session's Python dependencies, run outside the sandbox with network access.

    `requirements` are pip requirement strings the control plane has validated (names and version
    specifiers only, never paths, URLs or options). The whole set is installed every time into a fresh
    staging directory that replaces the package dir only when pip succeeds, so a failed install leaves the
    packages that were there working. `cache_dir` is the control plane's package store (wheels by sha256,
    installed trees; wheels.py, packages/cache.py), which no sandbox can write. `index_allow` is the
    operator's SANDBOX_PACKAGE_INDEX_ALLOW list (index_policy.py), applied to every host the download reaches.
    """

    requirements: tuple[str, ...]
    index_url: str = ""
    ca_bundle: str = ""
    extra_ca_pem: str = ""
    cache_dir: str = ""
    timeout: float = 600.0
    reuse_ttl: float = 0.0  # seconds an installed tree may serve an identical request (packages/cache.py)
    index_allow: str = ""


@dataclass(frozen=True)
class InstalledPackages:
    """What an install left in the package dir: every distribution as (name, version), the wheels it came
    from as (file name, sha256), and pip's output."""

    packages: tuple[tuple[str, str], ...]
    log: str = ""
    duration_ms: float = 0.0
    wheels: tuple[tuple[str, str], ...] = ()


class Runtime(abc.ABC):
    """A sandbox backend. Implementations: process (bubblewrap), docker, kubernetes; fake for tests."""

    name: str = ""
    # Whether update_resources can change the limits of a live sandbox. A warm sandbox of a backend that
    # cannot serves only sessions asking for exactly the resources it was built with.
    resizes_live: bool = True

    @classmethod
    def config_from_settings(cls, settings: Any) -> dict[str, Any]:
        """Constructor arguments from a settings object (read with getattr; runtime/ never imports Django)."""
        return {}

    @abc.abstractmethod
    def create(self, spec: SandboxSpec) -> SandboxHandle:
        """Start a sandbox and return once its executor answers /health. Cleans up after itself on failure."""

    @abc.abstractmethod
    def destroy(self, handle: SandboxHandle) -> None:
        """Remove the sandbox: no process, container or directory left. Idempotent."""

    @abc.abstractmethod
    def inspect(self, handle: SandboxHandle) -> SandboxState:
        """Report whether the sandbox exists and runs, with current usage where the backend can tell."""

    @abc.abstractmethod
    def list_managed(self) -> list[SandboxHandle]:
        """Every sandbox this backend started on this host/cluster, including ones from before a restart."""

    @abc.abstractmethod
    def executor(self, handle: SandboxHandle) -> ExecutorClient:
        """A client for the sandbox's executor."""

    def check(self) -> None:
        """Raise RuntimeFailure when this backend cannot create sandboxes here (for health checks)."""
        return None

    def update_resources(self, handle: SandboxHandle, resources: Resources) -> None:
        """Apply new limits to a live sandbox (a claimed warm sandbox). Backends that cannot, refuse."""
        raise RuntimeFailure(
            f"the {self.name} runtime cannot change resources of a live sandbox", permanent=True
        )

    def salvage_files(self, handle: SandboxHandle) -> Iterator[tuple[str, Callable[[], IO[bytes]]]] | None:
        """The workspace's regular files as (relative path, opener) for a sandbox whose executor is gone, or
        None when this backend cannot read it from here. Symlinks are never followed; call each opener
        before advancing the iterator."""
        return None

    def install_packages(self, handle: SandboxHandle, request: PackageInstall) -> InstalledPackages:
        """Install Python packages for the sandbox, from outside it; it sees them read-only in /opt/packages.

        Raises RuntimeFailure with pip's error text when the install fails; the package dir is then as it was.
        """
        raise RuntimeFailure(f"the {self.name} runtime cannot install packages", permanent=True)

    def execute(self, handle: SandboxHandle, request: ExecuteRequest) -> Iterator[ExecutionEvent]:
        """Run one execution and yield its events (runtime.events): started, output, then one result."""
        return self.executor(handle).execute(request)
