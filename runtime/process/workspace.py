"""A process-backend session's host directories: who owns them, how big the workspace may get, where bwrap
finds them.

Layout under `<data_dir>/sandboxes/<session_id>/` (the session root):

    workspace/      the sandbox's /workspace: with a root control plane, the mount point of `workspace.img`
                    (an ext4 loop image of `disk_mb` MiB, loop_workspace.py), so the disk limit is a total;
                    else a plain directory, and only the per-file limit (RLIMIT_FSIZE) holds
    workspace.img   the image (root 0600; never visible inside)
    run/            the sandbox's /run/sandbox: the executor's socket, and its token file until read
    packages/       the sandbox's read-only /opt/packages
    etc/            generated passwd, group, hosts, hostname, nsswitch.conf
    executor.log, sandbox.json

Ownership when the control plane is root and the session has its own host uid U: the root 0711 (anyone may
pass, nobody but root may list or create), workspace/ U 0700, run/ U 0700 until the executor has made its
socket and read its token, then root 0700, everything else root's. No other session's uid can open any of
it, and U can write nothing but its workspace.

The stage. bubblewrap runs as U and resolves every bind source as U (it even realpath()s `--bind-fd`
sources), but U cannot pass the data dir (0700, and it holds the database). So the session root is also
bind-mounted at `<stage_dir>/<tag>/<session_id>` (stage_dir 0711, e.g. /run/sandbox-control-plane), and
bwrap is pointed there. The stage is a recursive bind, so the workspace's loop mount is part of it.
Both mounts live in the host's mount namespace and survive a control-plane restart along with the sandbox;
`remove` undoes them, and `sweep_stages` detaches the stages of sessions whose directory is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

from runtime import loop_workspace as lw
from runtime.host_files import force_remove

logger = logging.getLogger(__name__)

ROOT_MODE_SHARED = 0o711


@dataclass(frozen=True)
class SessionDirs:
    """Host paths of one session; `stage` is "" when bwrap can reach the root directly (no uid change)."""

    root: str
    stage: str = ""

    @property
    def workspace(self) -> str:
        return os.path.join(self.root, "workspace")

    @property
    def image(self) -> str:
        return os.path.join(self.root, "workspace.img")

    @property
    def run(self) -> str:
        return os.path.join(self.root, "run")

    @property
    def packages(self) -> str:
        return os.path.join(self.root, "packages")

    @property
    def etc(self) -> str:
        return os.path.join(self.root, "etc")

    def reachable(self, sub: str) -> str:
        """The path of `sub` that bubblewrap, running as the session's uid, can open."""
        return os.path.join(self.stage or self.root, sub)


def make(
    dirs: SessionDirs, *, uid: int, gid: int, disk_mb: int, loop: bool, template_dir: str | None = None
) -> None:
    """The workspace (loop-mounted when `loop`), run, packages and etc directories, owned as described.

    `template_dir` holds blank formatted images per size, copied instead of running mkfs per session.
    """
    foreign = uid != os.geteuid()
    if foreign:
        os.chmod(dirs.root, ROOT_MODE_SHARED)
    if loop:
        lw.create_loop(dirs.image, dirs.workspace, disk_mb, uid, gid, template_dir=template_dir)
        os.chmod(dirs.workspace, 0o700)
    else:
        os.mkdir(dirs.workspace, 0o700)
    os.mkdir(dirs.run, 0o700)
    if foreign:
        os.chown(dirs.workspace, uid, gid)
        os.chown(dirs.run, uid, gid)
    os.mkdir(dirs.packages, 0o755)


def give_token(path: str, *, uid: int, gid: int) -> None:
    if uid != os.geteuid():
        os.chown(path, uid, gid)


def seal_run(dirs: SessionDirs, *, uid: int) -> None:
    """Once the executor listens: its socket stays, but the sandbox may no longer touch the directory."""
    if uid != os.geteuid():
        os.chown(dirs.run, os.geteuid(), os.getegid())
        os.chmod(dirs.run, 0o700)


def mount_stage(dirs: SessionDirs) -> None:
    """Bind the session root at its stage path, making the path's directories (0711) as needed."""
    parent = os.path.dirname(dirs.stage)
    for _ in range(5):
        for path in (os.path.dirname(parent), parent):
            try:
                os.mkdir(path, ROOT_MODE_SHARED)
            except FileExistsError:
                pass
            os.chmod(path, ROOT_MODE_SHARED)  # an existing one may have been made under a stricter umask
        try:
            os.mkdir(dirs.stage, 0o700)
        except FileExistsError:
            break
        except FileNotFoundError:  # the last teardown of this data dir just removed the empty parent
            continue
        break
    lw.bind(dirs.root, dirs.stage)


def remove(dirs: SessionDirs) -> list[str]:
    """Undo everything `make` and `mount_stage` did; each step tolerates absence. Returns what failed.

    Order: the stage first (it holds a second reference to the workspace mount), then the workspace mount
    and its loop device, then the files. The directory is removed only when nothing is mounted in it any
    more: rmtree across a live mount would empty the mounted file system instead.
    """
    errors: list[str] = []
    if dirs.stage:
        try:
            lw.detach(dirs.stage)
            if os.path.isdir(dirs.stage):
                os.rmdir(dirs.stage)
        except OSError as exc:
            errors.append(f"stage {dirs.stage}: {exc}")
        else:
            try:  # the data dir's stage parent, once its last session is gone (mount_stage remakes it)
                os.rmdir(os.path.dirname(dirs.stage))
            except OSError:
                pass
    if os.path.exists(dirs.image) or lw.mounted(dirs.workspace):
        try:
            lw.unmount(dirs.image, dirs.workspace)
        except lw.WorkspaceError as exc:
            errors.append(f"workspace: {exc}")
    if lw.mounted(dirs.workspace):
        errors.append(f"workspace {dirs.workspace} is still mounted")
    elif os.path.lexists(dirs.root):
        shutil.rmtree(dirs.root, onerror=force_remove)
    return errors


def sweep_stages(stage_parent: str, sandboxes_dir: str) -> None:
    """Detach the stages of sessions whose directory is gone (removed by hand, or a lost data dir)."""
    try:
        names = os.listdir(stage_parent)
    except OSError:
        return
    for name in names:
        if os.path.lexists(os.path.join(sandboxes_dir, name)):
            continue
        stage = os.path.join(stage_parent, name)
        try:
            lw.detach(stage)
            os.rmdir(stage)
        except OSError as exc:
            logger.warning("cannot remove the leftover sandbox stage %s: %s", stage, exc)
