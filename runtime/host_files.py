"""Reading a sandbox's workspace directory on this host without its executor (a crashed sandbox's files).

The directory was written by sandboxed code, so it may hold symlinks to host files (`ln -s /etc/shadow x`),
FIFOs that would block a reader forever, sockets and devices. Every component is therefore opened
O_NOFOLLOW relative to its parent's descriptor and only regular files are yielded: no host file can be
pulled in, whatever the sandbox left behind or swaps in while the walk runs.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from typing import IO, Any

Opener = Callable[[], IO[bytes]]
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def local_directory(path: str, node: str) -> str | None:
    """`path` when it is a directory on this host (`node` empty or this host's name), else None."""
    if not path or (node and node != socket.gethostname()):
        return None
    return path if os.path.isdir(path) else None


def regular_files(root: str) -> Iterator[tuple[str, Opener]]:
    """Regular files under `root` as (relative path, opener), walked by descriptor: no symlink is followed.

    Each opener must be called before the walk goes on (it opens relative to the current directory's fd).
    An opener raises FileNotFoundError when the file went away or stopped being a regular file.
    """
    stack = [("", os.open(root, DIR_FLAGS))]
    try:
        while stack:
            rel, dir_fd = stack.pop()
            try:
                for name in os.listdir(dir_fd):
                    path = f"{rel}/{name}" if rel else name
                    try:
                        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            stack.append((path, os.open(name, DIR_FLAGS, dir_fd=dir_fd)))
                    except OSError:
                        continue  # gone, or swapped for a symlink (ELOOP) since it was listed
                    if stat.S_ISREG(st.st_mode):
                        yield path, functools.partial(_open_regular, name, dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        for _, dir_fd in stack:
            os.close(dir_fd)


def _open_regular(name: str, dir_fd: int) -> IO[bytes]:
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:  # ELOOP: it became a symlink; ENOENT: it went away
        raise FileNotFoundError(name) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(name)
    return os.fdopen(fd, "rb")


def force_remove(func: Any, path: str, exc_info: Any) -> None:
    """rmtree's error hook: sandboxed code may leave directories without write or search permission."""
    parent = os.path.dirname(path)
    try:
        os.chmod(parent, 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, onerror=force_remove)
        else:
            func(path)
    except FileNotFoundError:
        pass
