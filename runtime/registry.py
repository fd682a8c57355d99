"""Resolve a runtime name (`SANDBOX_RUNTIME`, or a template override) to a backend, lazily.

Backends import heavy clients (docker, kubernetes); importing them only when first asked for keeps the
embedded default light and lets a machine without those libraries still run the process backend.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from runtime.base import Runtime, RuntimeFailure

_BACKENDS: dict[str, str] = {
    "process": "runtime.process:ProcessRuntime",
    "docker": "runtime.docker:DockerRuntime",
    "fake": "runtime.fake:FakeRuntime",
}

_instances: dict[str, Runtime] = {}
_lock = threading.Lock()


def available_runtimes() -> list[str]:
    return sorted(_BACKENDS)


def get_runtime(name: str, config: Mapping[str, Any] | None = None) -> Runtime:
    """Return the one instance of backend `name`, built from `config` on first use."""
    if name not in _BACKENDS:
        raise RuntimeFailure(
            f"unknown runtime {name!r}; choose one of {', '.join(available_runtimes())}", permanent=True
        )
    with _lock:
        if name not in _instances:
            module_name, _, class_name = _BACKENDS[name].partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise RuntimeFailure(f"the {name} runtime is not available: {exc}", permanent=True) from exc
            _instances[name] = getattr(module, class_name)(**dict(config or {}))
        return _instances[name]


def reset_runtimes() -> None:
    """Forget built instances (tests, and settings changes)."""
    with _lock:
        _instances.clear()
