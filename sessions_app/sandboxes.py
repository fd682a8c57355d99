"""The bridge from sessions to `runtime/`: which backend a session uses, and the handle stored on its row."""

from __future__ import annotations

from django.conf import settings

from runtime import Runtime, SandboxHandle, get_runtime
from runtime.registry import config_from_settings
from sessions_app.models import SandboxSession


def runtime_named(name: str) -> Runtime:
    """The live backend `name`, configured from Django settings by the backend itself (its
    `config_from_settings`); the one way the apps reach a backend by name."""
    return get_runtime(name, config_from_settings(name, settings))


def runtime_for(session: SandboxSession) -> Runtime:
    return runtime_named(session.runtime_type or settings.SANDBOX_RUNTIME)


def handle_for(session: SandboxSession) -> SandboxHandle | None:
    """The stored handle of the session's sandbox, or None when it never got one."""
    if not session.container_id:
        return None
    return SandboxHandle(
        backend=session.runtime_type or settings.SANDBOX_RUNTIME,
        sandbox_id=session.container_id,
        session_id=session.id,
        endpoint=session.executor_endpoint,
        token=session.executor_token,
        node=session.runtime_node,
        workspace_path=session.workspace_path,
    )
