"""E2B's absolute paths onto the session's workspace.

E2B's sandboxes start in /home/user; ours in /workspace, the only directory the file services reach. So
`/workspace/x`, `/home/user/x` and a relative `x` all name the workspace file `x`, and paths we return are
`/workspace/...` (what commands and code in the sandbox see). Any other absolute path is refused.
"""

from __future__ import annotations

from sessions_app.files import WORKSPACE_ROOT, BadPath, clean_path

HOME_ALIASES = (WORKSPACE_ROOT, "/home/user")


def workspace_relative(path: str, *, allow_root: bool = True) -> str:
    """The workspace-relative path E2B's `path` names; BadPath when it is outside the workspace."""
    raw = path.strip() or "."
    if raw.startswith("~"):
        raw = "/home/user" + raw[1:]
    if raw.startswith("/"):
        for root in HOME_ALIASES:
            if raw == root or raw.startswith(root + "/"):
                raw = raw[len(root) :].lstrip("/")
                break
        else:
            raise BadPath(f"only the workspace ({WORKSPACE_ROOT}, also reachable as /home/user) is reachable")
    return clean_path(raw, allow_empty=allow_root)


def absolute(relative: str) -> str:
    return f"{WORKSPACE_ROOT}/{relative}" if relative else WORKSPACE_ROOT
