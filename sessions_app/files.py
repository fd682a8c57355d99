"""Workspace file operations of a live session, through its executor. Paths are checked here first and
again by the executor (which also resolves symlinks), so a bad path never reaches the sandbox's disk."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from runtime import RuntimeFailure
from sessions_app.models import SandboxSession, SessionStatus
from sessions_app.sandboxes import handle_for, runtime_for
from sessions_app.services import SessionError

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
WORKSPACE_ROOT = "/workspace"


class BadPath(ValueError):
    """A path that is absolute, climbs out with '..', holds NUL, or is otherwise unusable."""


def clean_path(raw: str, *, allow_empty: bool = False) -> str:
    """A workspace-relative path with no '.' or '..' parts; raises BadPath."""
    if "\x00" in raw:
        raise BadPath("paths may not contain NUL")
    if raw.startswith("/") or raw.startswith("\\"):
        raise BadPath("paths are relative to the workspace; drop the leading '/'")
    parts = [part for part in raw.replace("\\", "/").split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise BadPath("paths may not contain '..'")
    if len(raw) > 4096:
        raise BadPath("path too long")
    path = "/".join(parts)
    if not path and not allow_empty:
        raise BadPath("a file path is required")
    return path


def _client(session: SandboxSession):
    if session.status != SessionStatus.RUNNING:
        raise SessionError(
            "session_not_running", f"session {session.id} is {session.status}; its files are not live"
        )
    handle = handle_for(session)
    if handle is None:
        raise SessionError("session_not_running", f"session {session.id} has no sandbox")
    session.touch()
    return runtime_for(session).executor(handle)


def files_list(*, session: SandboxSession, path: str = "") -> list[dict[str, Any]]:
    entries = _client(session).list_files(clean_path(path, allow_empty=True))
    return [
        {
            "name": entry.get("name"),
            "path": entry.get("path"),
            "container_path": f"{WORKSPACE_ROOT}/{entry.get('path')}",
            "size": entry.get("size"),
            "modified_time": entry.get("modified_time"),
            "is_dir": bool(entry.get("is_dir")),
        }
        for entry in entries
    ]


def files_download(*, session: SandboxSession, path: str) -> Iterator[bytes]:
    """Chunks of the file; raises FileNotFoundError, BadPath, SessionError or RuntimeFailure."""
    client = _client(session)
    target = clean_path(path)
    try:
        return client.download(target)
    except ValueError as exc:
        raise BadPath(str(exc)) from exc


def files_upload(*, session: SandboxSession, path: str, fileobj: IO[bytes], size: int) -> dict[str, Any]:
    if size > MAX_UPLOAD_BYTES:
        raise SessionError("too_large", f"files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
    client = _client(session)
    target = clean_path(path)
    try:
        result = client.upload(target, fileobj, size)
    except ValueError as exc:
        raise BadPath(str(exc)) from exc
    return {"file_path": result.get("path", target), "size": result.get("size", size)}


def files_delete(*, session: SandboxSession, path: str) -> None:
    client = _client(session)
    try:
        client.delete(clean_path(path))
    except ValueError as exc:
        raise BadPath(str(exc)) from exc


__all__ = [
    "BadPath",
    "RuntimeFailure",
    "clean_path",
    "files_delete",
    "files_download",
    "files_list",
    "files_upload",
]
