"""A recursive file listing made of one-level listings, in the executor's order (executor/files.py `walk`).

For listings that have no walk of their own: a workspace served by an executor too old to walk, and the
stored copy of an ended session's workspace. `list_dir(path)` returns one directory's entries (each with
`name`, `path` and `is_dir`), or raises FileNotFoundError / NotADirectoryError for the path asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Entries = list[dict[str, Any]]


def walk_listing(list_dir: Callable[[str], Entries], path: str, limit: int) -> tuple[Entries, bool]:
    """Files under `path` at any depth, a directory's files first (by name), then its subdirectories' (by
    name, depth first); and whether there were more than `limit`. A subdirectory gone meanwhile is skipped."""
    found: Entries = []
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(list_dir(directory), key=lambda entry: str(entry["name"]))
        except (FileNotFoundError, NotADirectoryError):
            if directory == path:
                raise
            continue
        subdirectories = []
        for entry in entries:
            if entry.get("is_dir"):
                subdirectories.append(str(entry["path"]))
                continue
            if len(found) == limit:
                return found, True
            found.append(entry)
        stack.extend(reversed(subdirectories))
    return found, False
