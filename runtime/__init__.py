"""Sandbox backends and the in-sandbox executor.

This package never imports a Django app: it takes and returns the dataclasses of `runtime.base` and, for
executions, `runtime.events`.
"""

from __future__ import annotations

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
from runtime.events import (
    ExecutionEvent,
    ExecutionMetrics,
    ExecutionResult,
    ExecutionStarted,
    FileChange,
    OutputChunk,
)
from runtime.registry import available_runtimes, get_runtime

__all__ = [
    "ExecuteRequest",
    "ExecutionEvent",
    "ExecutionMetrics",
    "ExecutionResult",
    "ExecutionStarted",
    "FileChange",
    "InstalledPackages",
    "OutputChunk",
    "PackageInstall",
    "Resources",
    "Runtime",
    "RuntimeFailure",
    "SandboxHandle",
    "SandboxSpec",
    "SandboxState",
    "available_runtimes",
    "get_runtime",
]
