"""envd's filesystem operations on a session's workspace: entries as envd describes them, and the operations
our file services lack (make a directory, move), done by a short shell run in the sandbox.

Those shell runs are file operations, not the user's executions: they go straight to the runtime and leave no
execution record, as uploads and downloads do not.
"""

from __future__ import annotations

import secrets
import shlex
from datetime import UTC, datetime
from typing import Any

from runtime import ExecuteRequest, ExecutionResult, OutputChunk, RuntimeFailure
from sandbox_site.e2b.paths import absolute
from sessions_app.files import files_list
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for, runtime_for

FILE, DIRECTORY = "FILE_TYPE_FILE", "FILE_TYPE_DIRECTORY"


def entry_info(item: dict[str, Any]) -> dict[str, Any]:
    """One of our file-service entries as envd's EntryInfo (protobuf JSON: int64 as a string)."""
    is_dir = bool(item.get("is_dir"))
    modified = item.get("modified_time") or datetime.now(UTC).isoformat()
    return {
        "name": item.get("name") or "",
        "type": DIRECTORY if is_dir else FILE,
        "path": absolute(str(item.get("path") or "")),
        "size": str(int(item.get("size") or 0)),
        "mode": 0o755 if is_dir else 0o644,
        "permissions": "drwxr-xr-x" if is_dir else "-rw-r--r--",
        "owner": "user",
        "group": "user",
        "modifiedTime": _rfc3339(modified),
    }


def _rfc3339(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    text = str(value)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def stat(session: SandboxSession, relative: str) -> dict[str, Any]:
    """The entry at `relative` (the workspace itself for ''); FileNotFoundError when there is none."""
    if not relative:
        return entry_info({"name": "workspace", "path": "", "is_dir": True, "size": 0})
    parent, _, name = relative.rpartition("/")
    try:
        entries = files_list(session=session, path=parent)
    except NotADirectoryError:
        raise FileNotFoundError(relative) from None
    for item in entries:
        if item.get("name") == name:
            return entry_info(item)
    raise FileNotFoundError(relative)


def list_dir(session: SandboxSession, relative: str, depth: int) -> list[dict[str, Any]]:
    """Entries under `relative`, `depth` levels down (envd's ListDir)."""
    entries: list[dict[str, Any]] = []
    for item in files_list(session=session, path=relative):
        entries.append(entry_info(item))
        if item.get("is_dir") and depth > 1:
            entries.extend(list_dir(session, str(item.get("path") or ""), depth - 1))
    return entries


class ShellFailed(Exception):
    def __init__(self, exit_code: int | None, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_shell(session: SandboxSession, script: str, *args: str, timeout: int = 30) -> str:
    """Run `script` with `args` as $1.. in the sandbox's workspace; its stdout, or ShellFailed."""
    handle = handle_for(session)
    if handle is None:
        raise RuntimeFailure(f"session {session.client_id} has no sandbox")
    code = "set -- " + " ".join(shlex.quote(a) for a in args) + "\n" + script
    request = ExecuteRequest(
        execution_id=f"e2bfs_{secrets.token_hex(8)}",
        language="shell",
        code=code,
        event={},
        timeout=timeout,
        env={},
    )
    out: list[str] = []
    err: list[str] = []
    result: ExecutionResult | None = None
    for event in runtime_for(session).execute(handle, request):
        if isinstance(event, OutputChunk):
            (out if event.stream == "stdout" else err).append(event.data)
        elif isinstance(event, ExecutionResult):
            result = event
    session.touch()
    if result is None or result.exit_code != 0:
        raise ShellFailed(
            result.exit_code if result else None, "".join(err).strip() or "the operation failed"
        )
    return "".join(out)


def make_dir(session: SandboxSession, relative: str) -> None:
    """Create the directory (and its parents); FileExistsError when something is there already."""
    try:
        run_shell(session, '[ -e "$1" ] && exit 17\nmkdir -p -- "$1"', relative)
    except ShellFailed as exc:
        if exc.exit_code == 17:
            raise FileExistsError(relative) from None
        raise


def move(session: SandboxSession, source: str, destination: str) -> None:
    """Rename `source` to `destination` (parents created); FileNotFoundError when the source is missing."""
    script = '[ -e "$1" ] || [ -L "$1" ] || exit 44\nmkdir -p -- "$(dirname -- "$2")"\nmv -f -T -- "$1" "$2"'
    try:
        run_shell(session, script, source, destination)
    except ShellFailed as exc:
        if exc.exit_code == 44:
            raise FileNotFoundError(source) from None
        raise
