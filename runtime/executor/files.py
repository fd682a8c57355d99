"""The filesystem side of the /files endpoints: safe path resolution, listing, streamed reads, atomic writes.

A path is refused (PathError, 400) when it is absolute, has a `..` component or a NUL byte, or resolves -
symlinks included - outside the workspace. The lexical path is what gets opened or unlinked (so deleting a
symlink removes the link, not its target); only its resolution is checked. Sandboxed code could swap a
symlink between the check and the open, but it runs as the same user inside the same sandbox, so the daemon
can reach nothing through such a race that the code could not reach by itself.

Only directories and regular files are served. Special files (FIFOs, sockets, devices) are left out of
listings and refused for reads and deletes-through-links: a FIFO opened for reading blocks until a writer
appears, so every open here is O_NONBLOCK and the type is checked with fstat before the first read. Any other
OS error (a symlink loop, a permission denied) is a PathError too, so the caller answers 400, never 500.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

CHUNK = 64 * 1024


class PathError(ValueError):
    """The path is not acceptable: the message says why."""


@contextmanager
def os_errors() -> Iterator[None]:
    """OS errors other than "not found" become PathError (400): the path is what is wrong, not the daemon."""
    try:
        yield
    except (FileNotFoundError, NotADirectoryError, PathError):
        raise
    except OSError as exc:
        raise PathError(f"cannot use that path: {exc.strerror or exc}") from None


def is_special(mode: int) -> bool:
    """A FIFO, socket or device: never listed, read, saved or followed."""
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def lexical(workspace: str, rel: str, *, allow_root: bool = False) -> str:
    """The path under the workspace, checked as text only (no '..', NUL, absolute or empty path)."""
    if "\x00" in rel:
        raise PathError("path contains a NUL byte")
    if rel.startswith("/"):
        raise PathError("path must be relative to the workspace")
    parts = rel.split("/")
    if ".." in parts:
        raise PathError("path must not contain '..'")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts and not allow_root:
        raise PathError("path is empty")
    return os.path.join(workspace, *parts)


def resolve(workspace: str, rel: str, *, allow_root: bool = False) -> str:
    """`lexical`, and its resolution (symlinks followed) must stay inside the workspace."""
    target = lexical(workspace, rel, allow_root=allow_root)
    real = os.path.realpath(target)
    if real != workspace and not real.startswith(workspace + os.sep):
        raise PathError("path resolves outside the workspace")
    return target


def relative(workspace: str, path: str) -> str:
    return os.path.relpath(path, workspace).replace(os.sep, "/")


def iso_utc(ts: float) -> str:
    micros = int(round((ts % 1) * 1_000_000))
    if micros == 1_000_000:
        ts, micros = ts + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{micros:06d}+00:00"


def list_dir(workspace: str, rel: str) -> list[dict]:
    """Directories, regular files and symlinks (not followed) of a directory; special files are left out."""
    path = resolve(workspace, rel, allow_root=True)
    if not os.path.isdir(path):
        if os.path.lexists(path):
            raise PathError("path is not a directory")
        raise FileNotFoundError(rel)
    items: list[dict[str, Any]] = []
    with os_errors(), os.scandir(path) as listing:
        for entry in listing:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if is_special(st.st_mode) or (stat.S_ISLNK(st.st_mode) and _links_to_special(entry.path)):
                continue
            items.append(
                {
                    "name": entry.name,
                    "path": relative(workspace, entry.path),
                    "size": st.st_size,
                    "modified_time": iso_utc(st.st_mtime),
                    "is_dir": stat.S_ISDIR(st.st_mode),
                }
            )
    items.sort(key=lambda item: str(item["name"]))
    return items


def walk(workspace: str, rel: str, limit: int) -> tuple[list[dict], bool]:
    """Files (regular files and symlinks, as `list_dir` lists them) under a directory at any depth, and whether
    more than `limit` were there.

    A directory's files come first (by name), then its subdirectories' (by name, depth first), so a cut-off
    listing is always the same prefix. Directories are walked,
    not listed, and a symlink to a directory is listed, not followed (no loops, nothing outside). A
    subdirectory that cannot be read (permissions changed by sandboxed code) is skipped, not an error.
    """
    root = resolve(workspace, rel, allow_root=True)
    if not os.path.isdir(root):
        if os.path.lexists(root):
            raise PathError("path is not a directory")
        raise FileNotFoundError(rel)
    found: list[dict[str, Any]] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            if directory != root:
                continue
            with os_errors():  # the directory asked for: its error is the answer
                raise
        subdirectories = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirectories.append(entry.path)
                continue
            if is_special(st.st_mode) or (stat.S_ISLNK(st.st_mode) and _links_to_special(entry.path)):
                continue
            if len(found) == limit:
                return found, True
            found.append(
                {
                    "name": entry.name,
                    "path": relative(workspace, entry.path),
                    "size": st.st_size,
                    "modified_time": iso_utc(st.st_mtime),
                    "is_dir": False,
                }
            )
        stack.extend(reversed(subdirectories))
    return found, False


def _links_to_special(path: str) -> bool:
    """A link to a FIFO or device is as unreadable as the thing itself (a dangling link is listed)."""
    try:
        return is_special(os.stat(path).st_mode)
    except OSError:
        return False


def open_for_read(workspace: str, rel: str) -> tuple[int, int]:
    """Open a workspace file; returns (fd, size). The caller streams and closes the fd."""
    path = resolve(workspace, rel)
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (forever, if sandboxed code
    # planted it). It changes nothing for a regular file, the only kind read past the fstat below.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    with os_errors():
        try:
            fd = os.open(path, flags)
        except IsADirectoryError:
            raise PathError("path is a directory") from None
        st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise PathError("path is a directory")
        raise PathError("path is not a regular file (a FIFO, socket or device)")
    return fd, st.st_size


def read_chunks(fd: int) -> Iterator[bytes]:
    try:
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        os.close(fd)


def write_stream(workspace: str, rel: str, read: Callable[[int], bytes], length: int) -> int:
    """Write `length` bytes from `read` to a temp file beside the target, then rename it into place.

    A reader that stops early (client gone) leaves the old file untouched and no temp file behind.
    """
    path = resolve(workspace, rel)
    if os.path.isdir(path):
        raise PathError("path is a directory")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PathError("a parent of the path is not a directory") from None
    except OSError as exc:
        raise PathError(f"cannot use that path: {exc.strerror or exc}") from None
    with os_errors():
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            remaining = length
            while remaining > 0:
                chunk = read(min(CHUNK, remaining))
                if not chunk:
                    raise ConnectionError(f"upload ended after {length - remaining} of {length} bytes")
                out.write(chunk)
                remaining -= len(chunk)
            os.fchmod(out.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return length


def delete(workspace: str, rel: str) -> None:
    """Delete a file, directory or link (the link, not its target: so a link out of the workspace can go).

    Only the parent has to resolve inside the workspace; the last component is removed as it is.
    """
    path = lexical(workspace, rel)
    resolve(workspace, relative(workspace, os.path.dirname(path)), allow_root=True)
    with os_errors():
        st = os.lstat(path)  # FileNotFoundError -> 404
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
