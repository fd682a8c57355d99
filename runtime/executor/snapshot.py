"""Workspace snapshots, diffed around an execution to report the files it created, modified and deleted.

A snapshot maps each file's path (relative to the workspace) to (size, mtime_ns, inode): an in-place rewrite
changes size or mtime, a rewrite-and-rename changes the inode. Directories themselves are not reported, only
what is in them. The walk stops at MAX_ENTRIES so a huge workspace costs a bounded amount of time per
execution; the diff then says `truncated` instead of guessing. The sizes of created and modified files come from the
same walk, so the control plane never lists the workspace again to learn them. Executions that run at the same time see each
other's changes: the diff is of the workspace, not of one process.
"""

from __future__ import annotations

import os

MAX_ENTRIES = 10_000

Snapshot = dict  # path -> (size, mtime_ns, inode); None when the walk was cut short


def take(root: str, max_entries: int = MAX_ENTRIES) -> Snapshot | None:
    entries: Snapshot = {}
    seen = 0
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            listing = os.scandir(os.path.join(root, rel) if rel else root)
        except OSError:
            continue  # removed while we walked, or unreadable: not ours to report
        with listing:
            for entry in listing:
                seen += 1
                if seen > max_entries:
                    return None
                path = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(path)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                entries[path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return entries


def diff(before: Snapshot | None, after: Snapshot | None) -> dict:
    """The result's `files`: paths by change, and `sizes` (bytes) of the created and modified ones."""
    if before is None or after is None:
        return {"created": [], "modified": [], "deleted": [], "sizes": {}, "truncated": True}
    created = sorted(p for p in after if p not in before)
    modified = sorted(p for p, sig in after.items() if p in before and before[p] != sig)
    return {
        "created": created,
        "modified": modified,
        "deleted": sorted(p for p in before if p not in after),
        "sizes": {p: after[p][0] for p in created + modified},
    }
