"""The Docker backend's workspaces: the shared ext4 loop image (loop_workspace.py), or a tmpfs fallback."""

from __future__ import annotations

from runtime.loop_workspace import (
    MIB,
    WorkspaceError,
    create_loop,
    grow_loop,
    loop_device,
    loop_unsupported_reason,
    unmount,
)

__all__ = [
    "MIB",
    "WorkspaceError",
    "create_loop",
    "grow_loop",
    "loop_device",
    "loop_unsupported_reason",
    "tmpfs_options",
    "unmount",
]


def tmpfs_options(size_mb: int, uid: int, gid: int) -> str:
    """Mount options of the fallback tmpfs workspace (Docker's HostConfig.Tmpfs syntax).

    `exec` overrides Docker's noexec default for tmpfs mounts: like the loop workspace, it may hold scripts
    and binaries the session runs.
    """
    return f"rw,exec,nosuid,nodev,size={int(size_mb)}m,uid={uid},gid={gid},mode=0755"
