"""Workspace workflows over storage (layout in storage.py): save at the end, restore at the start, serve after.

Saving reads the workspace through the sandbox's executor, which refuses any path that resolves outside the
workspace, so a symlink planted by sandboxed code (`ln -s /etc/shadow x`) is skipped rather than followed.
When the executor is already dead (a crashed sandbox), the backend salvages what it can reach
(`Runtime.salvage_files`: regular files only, no symlink followed), so no host file can be pulled in either way.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
import os
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, cast

from runtime import RuntimeFailure
from runtime.client import ExecutorClient
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for, runtime_for
from sessions_app.storage import (
    CHUNK,
    MAX_SAVED_FILES,
    ChunkReader,
    iter_reader,
    session_prefix,
    storage_errors,
    store,
    workspace_key,
)

logger = logging.getLogger(__name__)

Opener = Callable[[], IO[bytes]]
WORKSPACE_ROOT = "/workspace"


def workspace_save(*, session: SandboxSession) -> int | None:
    """Mirror the sandbox's workspace into storage; returns the files saved, None when nothing could be read.

    Stored files the workspace no longer has are deleted, but only after a complete walk: a save cut short
    (too many files, the sandbox dying half-way) keeps whatever was stored before.
    """
    handle = handle_for(session)
    if handle is None:
        return None
    target = store()
    target.ensure_bucket()
    runtime = runtime_for(session)
    try:
        saved, complete = _copy_all(session.id, _executor_files(runtime.executor(handle)))
    except RuntimeFailure as exc:
        salvaged = runtime.salvage_files(handle)
        if salvaged is None:
            logger.warning("workspace of %s not saved: %s", session.id, exc.message)
            return None
        logger.info("executor of %s is gone (%s); salvaging its workspace", session.id, exc.message)
        saved, complete = _copy_all(session.id, salvaged)
    if complete:
        prefix = workspace_key(session.id)
        for key, _ in list(target.keys(prefix)):
            if key[len(prefix) :] not in saved:
                target.delete(key)
    logger.info("saved %d workspace files of %s%s", len(saved), session.id, "" if complete else " (partial)")
    return len(saved)


def workspace_restore(*, session: SandboxSession, client: ExecutorClient) -> int:
    """Upload the saved workspace of `session.restore_from` into a new sandbox; returns the files restored."""
    source = store()
    prefix = workspace_key(session.restore_from)
    restored = 0
    for key, _ in source.keys(prefix):
        reader, size = source.open(key)
        try:
            client.upload(key[len(prefix) :], cast(BinaryIO, reader), size)
            restored += 1
        except ValueError as exc:  # a name the executor refuses; nothing the new session can use
            logger.warning("not restoring %s into %s: %s", key, session.id, exc)
        finally:
            reader.close()
    return restored


def workspace_forget(*, session_id: str) -> None:
    """Delete everything stored for a session (its row is being deleted)."""
    store().delete_prefix(session_prefix(session_id))


def stored_save(*, session_id: str, path: str, fileobj: IO[bytes]) -> None:
    """Store one uploaded file as it also went to the live sandbox."""
    store().save(workspace_key(session_id, path), fileobj)


def stored_delete(*, session_id: str, path: str) -> None:
    """Forget a file (or a whole directory) deleted from the live sandbox."""
    target = store()
    target.delete_prefix(workspace_key(session_id, path) + "/")
    target.delete(workspace_key(session_id, path))


def stored_list(*, session_id: str, path: str) -> list[dict[str, Any]]:
    """The stored copy's entries in directory `path`, shaped like the executor's listing."""
    target = store()
    base = workspace_key(session_id, path + "/" if path else "")
    with storage_errors():
        dirs, files = target.listdir(base)
        if path and not dirs and not files:
            if target.size(workspace_key(session_id, path)) is not None:
                raise NotADirectoryError(path)
            raise FileNotFoundError(path)
    entries = [_entry(path, name, 0, None, is_dir=True) for name in dirs] + [
        _entry(path, f.name, f.size, f.modified, is_dir=False) for f in files
    ]
    return sorted(entries, key=lambda entry: entry["name"])


def stored_download(*, session_id: str, path: str) -> Iterator[bytes]:
    """Chunks of a stored file; FileNotFoundError when there is none (a directory is not a file either)."""
    with storage_errors():
        reader, _ = store().open(workspace_key(session_id, path))
    return iter_reader(reader)


def stored_presigned_url(*, session_id: str, path: str, over: int) -> str | None:
    """A presigned URL for a stored file bigger than `over` bytes, where the store can make one."""
    target = store()
    key = workspace_key(session_id, path)
    if over <= 0 or not hasattr(target, "client"):
        return None
    with storage_errors():
        size = target.size(key)
        if size is None or size <= over:
            return None
        return target.presigned_url(key, os.path.basename(path) or "download")


def _entry(
    parent: str, name: str, size: int, modified: dt.datetime | None, *, is_dir: bool
) -> dict[str, Any]:
    path = f"{parent}/{name}" if parent else name
    return {
        "name": name,
        "path": path,
        "container_path": f"{WORKSPACE_ROOT}/{path}",
        "size": size,
        "modified_time": modified.astimezone(dt.UTC).isoformat(timespec="microseconds") if modified else None,
        "is_dir": is_dir,
    }


def _copy_all(session_id: str, files: Iterator[tuple[str, Opener]]) -> tuple[set[str], bool]:
    """Store every file `files` yields; returns the paths stored and whether the walk was complete."""
    target = store()
    saved: set[str] = set()
    for path, opener in files:
        if len(saved) >= MAX_SAVED_FILES:
            logger.warning(
                "workspace of %s has over %d files; the rest is not saved", session_id, MAX_SAVED_FILES
            )
            return saved, False
        try:
            reader = opener()
        except (FileNotFoundError, IsADirectoryError, ValueError):
            continue  # gone meanwhile, a directory, or a path the executor refuses (a symlink out)
        try:
            target.save(workspace_key(session_id, path), reader)
        finally:
            reader.close()
        saved.add(path)
    return saved, True


def _executor_files(client: ExecutorClient) -> Iterator[tuple[str, Opener]]:
    pending = [""]
    while pending:
        directory = pending.pop()
        try:
            entries = client.list_files(directory)
        except (FileNotFoundError, ValueError):
            continue
        for entry in entries:
            path = str(entry.get("path") or "")
            if not path:
                continue
            if entry.get("is_dir"):
                pending.append(path)
            else:
                yield path, functools.partial(_download, client, path)


def _download(client: ExecutorClient, path: str) -> IO[bytes]:
    # Buffered, so read(n) returns n bytes until the end (a raw read returns one chunk): boto3 reads a
    # non-seekable stream in 8 MiB parts and takes a short read for the last one.
    return cast(IO[bytes], io.BufferedReader(ChunkReader(client.download(path)), CHUNK))
