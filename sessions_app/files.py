"""Workspace file operations of a session: live through its executor, from storage once it ended.

Paths are checked here first and again by the executor (which also resolves symlinks), so a bad path never
reaches the sandbox's disk; the stored copy holds regular files only (see workspaces.py), so no path in it
leads anywhere else either. Whatever the executor refuses (a symlink resolving outside the workspace, a FIFO,
socket or device, a symlink loop) comes back as BadPath with the executor's reason, which the API answers 400.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import IO, Any

from django.conf import settings

from runtime import RuntimeFailure
from runtime.listing import walk_listing
from sessions_app.models import SandboxSession, SessionStatus
from sessions_app.sandboxes import handle_for, runtime_for
from sessions_app.services import SessionError
from sessions_app.workspaces import (
    stored_delete,
    stored_download,
    stored_list,
    stored_presigned_url,
    stored_save,
)

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# A recursive listing's files when the caller gives no limit, and the most it may ask for.
DEFAULT_WALK_LIMIT = 1000
MAX_WALK_LIMIT = 10000
WORKSPACE_ROOT = "/workspace"


class BadPath(ValueError):
    """A path that is absolute, climbs out with '..', holds NUL, or is otherwise unusable."""


# runtime/client.py words a refusal "executor at <socket>: <what> answered 400: <reason>"; clients get the reason.
_EXECUTOR_REASON = re.compile(r"answered \d{3}: (?P<reason>.*)$", re.DOTALL)


def _refused(exc: ValueError) -> BadPath:
    match = _EXECUTOR_REASON.search(str(exc))
    return BadPath(match.group("reason") if match and match.group("reason") else "that path cannot be used")


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
            "session_not_running", f"session {session.client_id} is {session.status}; its files are not live"
        )
    handle = handle_for(session)
    if handle is None:
        raise SessionError("session_not_running", f"session {session.client_id} has no sandbox")
    session.touch()
    return runtime_for(session).executor(handle)


def _ended(session: SandboxSession) -> bool:
    """An ended session's files are served from the copy saved to storage when it ended."""
    return not session.is_live


def files_list(*, session: SandboxSession, path: str = "") -> list[dict[str, Any]]:
    """Entries of a workspace directory: live from the sandbox, or from storage once the session ended.

    Raises BadPath, FileNotFoundError, NotADirectoryError (a file, not a directory), SessionError
    (`creating`) or RuntimeFailure.
    """
    target = clean_path(path, allow_empty=True)
    if _ended(session):
        return stored_list(session_id=session.id, path=target)
    try:
        entries = _client(session).list_files(target)
    except ValueError as exc:
        raise _refused(exc) from exc
    return [_entry(entry) for entry in entries]


def files_walk(
    *, session: SandboxSession, path: str = "", limit: int = DEFAULT_WALK_LIMIT
) -> tuple[list[dict[str, Any]], bool]:
    """Files under a workspace directory at any depth, and whether there were more than `limit`.

    As the API this product replaces lists them: each `name` is the path relative to the workspace
    (`out/a.txt`), directories are walked rather than listed. The order is the executor's (a directory's
    files, then its subdirectories'), so a listing cut at `limit` is the same every time. Live sandboxes
    walk in one request to their executor; an ended session's stored copy a directory at a time. Raises as
    `files_list`.
    """
    target = clean_path(path, allow_empty=True)
    if _ended(session):
        entries, truncated = walk_listing(
            lambda directory: stored_list(session_id=session.id, path=directory), target, limit
        )
    else:
        try:
            entries, truncated = _client(session).walk_files(target, limit=limit)
        except ValueError as exc:
            raise _refused(exc) from exc
    return [{**_entry(entry), "name": entry.get("path")} for entry in entries], truncated


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": entry.get("name"),
        "path": entry.get("path"),
        "container_path": f"{WORKSPACE_ROOT}/{entry.get('path')}",
        "size": entry.get("size"),
        "modified_time": entry.get("modified_time"),
        "is_dir": bool(entry.get("is_dir")),
    }


def files_download(*, session: SandboxSession, path: str) -> Iterator[bytes]:
    """Chunks of the file (live, or stored once the session ended); raises FileNotFoundError, BadPath,
    SessionError or RuntimeFailure."""
    target = clean_path(path)
    if _ended(session):
        return stored_download(session_id=session.id, path=target)
    client = _client(session)
    try:
        return client.download(target)
    except ValueError as exc:
        raise _refused(exc) from exc


def files_download_url(*, session: SandboxSession, path: str) -> str | None:
    """A presigned storage URL for a big stored file of an ended session (SANDBOX_PRESIGN_OVER), else None."""
    if not _ended(session) or settings.SANDBOX_PRESIGN_OVER <= 0:
        return None
    return stored_presigned_url(
        session_id=session.id, path=clean_path(path), over=settings.SANDBOX_PRESIGN_OVER
    )


def files_upload(*, session: SandboxSession, path: str, fileobj: IO[bytes], size: int) -> dict[str, Any]:
    """Stream a file into the live sandbox, then (from the same spooled upload) into storage.

    Storage trails the sandbox: a failed storage write is logged, not returned, because the file is in the
    workspace and the save at the session's end stores it again.
    """
    if size > MAX_UPLOAD_BYTES:
        raise SessionError("too_large", f"files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
    client = _client(session)
    target = clean_path(path)
    try:
        result = client.upload(target, fileobj, size)
    except ValueError as exc:
        raise _refused(exc) from exc
    stored_path = str(result.get("path", target))
    if fileobj.seekable():
        try:
            fileobj.seek(0)
            stored_save(session_id=session.id, path=stored_path, fileobj=fileobj)
        except Exception:
            logger.exception("upload %s of %s is in the sandbox but not in storage", stored_path, session.id)
    return {"file_path": stored_path, "size": result.get("size", size)}


def files_delete(*, session: SandboxSession, path: str) -> None:
    """Delete a file or directory of a live session, in the sandbox and in storage."""
    client = _client(session)
    target = clean_path(path)
    try:
        client.delete(target)
    except ValueError as exc:
        raise _refused(exc) from exc
    try:
        stored_delete(session_id=session.id, path=target)
    except Exception:
        logger.exception("deleted %s of %s in the sandbox but not in storage", target, session.id)


__all__ = [
    "BadPath",
    "RuntimeFailure",
    "clean_path",
    "files_delete",
    "files_download",
    "files_download_url",
    "files_list",
    "files_walk",
    "files_upload",
]
