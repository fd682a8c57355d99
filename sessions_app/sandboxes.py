"""The bridge from sessions to `runtime/`: which backend a session uses, and the handle stored on its row."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from runtime import Runtime, SandboxHandle, get_runtime
from sessions_app.models import SandboxSession


def runtime_config(name: str) -> dict[str, Any]:
    """Constructor settings for backend `name`, from Django settings."""
    if name == "process":
        return {
            "data_dir": str(settings.DATA_DIR),
            "allow_unisolated": settings.SANDBOX_ALLOW_UNISOLATED,
            "uid_range": settings.SANDBOX_PROCESS_UID_RANGE,
            "tmp_size_mb": settings.SANDBOX_TMP_SIZE,
            "allow_no_seccomp": settings.SANDBOX_ALLOW_NO_SECCOMP,
        }
    if name == "docker":
        return {"data_dir": str(settings.DATA_DIR), "docker_url": settings.SANDBOX_DOCKER_URL or None}
    return {}


def runtime_named(name: str) -> Runtime:
    return get_runtime(name, runtime_config(name))


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
