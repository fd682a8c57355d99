"""Resolve a runtime name (`SANDBOX_RUNTIME`, or a template override) to a backend, lazily.

One line per backend: its name and where its class lives. Adding a backend is a package under `runtime/`
whose class implements `runtime.base.Runtime` (including `config_from_settings`), plus a line here.

Backends import heavy clients (docker, kubernetes); importing them only when first asked for keeps the
embedded default light and lets a machine without those libraries still run the process backend. Each
backend is built once per process; asking again with a configuration that contradicts the live instance's
is an error rather than a silent return of the old one (`reset_runtimes()` forgets instances, e.g. when
tests change settings).
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Mapping
from typing import Any

from runtime.base import Runtime, RuntimeFailure

_BACKENDS: dict[str, str] = {
    "process": "runtime.process:ProcessRuntime",
    "docker": "runtime.docker:DockerRuntime",
    "kubernetes": "runtime.kubernetes:KubernetesRuntime",
    "fake": "runtime.fake:FakeRuntime",
}

# The embedded default (SANDBOX_RUNTIME unset): needs nothing but this host.
DEFAULT_RUNTIME = "process"

_instances: dict[str, tuple[Runtime, dict[str, Any]]] = {}
_lock = threading.Lock()


def available_runtimes() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[Runtime]:
    """The class of backend `name`, imported on first use; RuntimeFailure (permanent) if unknown or absent."""
    if name not in _BACKENDS:
        raise RuntimeFailure(
            f"unknown runtime {name!r}; choose one of {', '.join(available_runtimes())}", permanent=True
        )
    module_name, _, class_name = _BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeFailure(f"the {name} runtime is not available: {exc}", permanent=True) from exc
    cls = getattr(module, class_name)
    assert issubclass(cls, Runtime)
    return cls


def config_from_settings(name: str, settings: Any) -> dict[str, Any]:
    """Constructor arguments of backend `name`, read by the backend itself from a settings object."""
    return backend_class(name).config_from_settings(settings)


def get_runtime(name: str, config: Mapping[str, Any] | None = None) -> Runtime:
    """Return the one instance of backend `name`, built from `config` on first use.

    Later calls may leave out `config` or give part of it; a value that differs from the one the live
    instance was built with (or, for an argument it was not given, from the constructor's default)
    raises RuntimeFailure.
    """
    cls = backend_class(name)
    wanted = dict(config or {})
    with _lock:
        live = _instances.get(name)
        if live is None:
            instance = cls(**wanted)
            _instances[name] = (instance, _effective(cls, wanted))
            return instance
        instance, effective = live
        conflicts = sorted(key for key, value in wanted.items() if effective.get(key, _MISSING) != value)
        if conflicts:
            raise RuntimeFailure(
                f"the {name} runtime is already running with other settings "
                f"({', '.join(f'{key}={effective.get(key)!r}' for key in conflicts)}; asked for "
                f"{', '.join(f'{key}={wanted[key]!r}' for key in conflicts)}); reset_runtimes() first",
                permanent=True,
            )
        return instance


def reset_runtimes() -> None:
    """Forget built instances (tests, and settings changes)."""
    with _lock:
        _instances.clear()


_MISSING = object()


def _effective(cls: type[Runtime], config: dict[str, Any]) -> dict[str, Any]:
    """`config` completed with the constructor's defaults for what it leaves out."""
    defaults = {
        name: param.default
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    return {**defaults, **config}
