"""What one Docker sandbox is made of: its host directories and the container's hardened options.

Kept apart from the lifecycle in docker.py so the security-relevant settings can be read (and reviewed) in
one place: every flag below is a decision of DESIGN.md §4.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from runtime.base import SandboxSpec
from runtime.docker import workspace as ws
from runtime.host_files import force_remove
from runtime.limits import MIB, OPEN_FILES

LABEL_MANAGED, LABEL_SESSION = "sandbox.managed", "sandbox.session"
LABEL_DATA_DIR, LABEL_DIR, LABEL_WORKSPACE = "sandbox.data_dir", "sandbox.dir", "sandbox.workspace"
LABEL_DISK_MB = "sandbox.disk_mb"  # the workspace size at creation (a loop workspace may grow later)
# Inside the container; the executor base image (images/executor-base) has the same layout.
RUN_DIR, WORKSPACE, PACKAGES, EXECUTOR_HOME = "/run/sandbox", "/workspace", "/opt/packages", "/opt/sandbox"
SOCKET_NAME, TOKEN_NAME, IMAGE_NAME = "executor.sock", "token", "workspace.img"


@dataclass(frozen=True)
class HostDirs:
    """One sandbox's directories on the host, under `<data_dir>/docker/<key>`."""

    root: str

    @property
    def run(self) -> str:
        return os.path.join(self.root, "run")

    @property
    def socket(self) -> str:
        return os.path.join(self.root, "run", SOCKET_NAME)

    @property
    def workspace(self) -> str:
        return os.path.join(self.root, "workspace")

    @property
    def image(self) -> str:
        return os.path.join(self.root, IMAGE_NAME)

    @property
    def packages(self) -> str:
        return os.path.join(self.root, "packages")

    def age(self) -> float:
        """Seconds since the directory was made; infinite when there is none."""
        try:
            return time.time() - os.lstat(self.root).st_mtime
        except OSError:
            return float("inf")


def prepare(dirs: HostDirs, spec: SandboxSpec, kind: str, uid: int, gid: int, *, template_dir: str) -> None:
    """Make the run dir (the executor's until it listens) with the token file, the packages dir, the workspace.

    `dirs.root` exists already (its exclusive mkdir is what stops two creates of one session). A loop
    workspace is a sparse copy of a blank image of its size, formatted once into `template_dir` (shared with
    the process runtime's), attached and mounted with ioctls: a few ms instead of mkfs and mount processes.
    """
    os.mkdir(dirs.run, 0o700)
    os.chown(dirs.run, uid, gid)
    fd = os.open(
        os.path.join(dirs.run, TOKEN_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400
    )
    try:
        os.fchown(fd, uid, gid)
        os.write(fd, spec.token.encode("utf-8"))
    finally:
        os.close(fd)
    os.mkdir(dirs.packages, 0o755)
    os.mkdir(dirs.workspace, 0o755)
    if kind == "loop":
        ws.create_loop(
            dirs.image, dirs.workspace, spec.resources.disk_mb, uid, gid, template_dir=template_dir
        )


def seal_run_dir(dirs: HostDirs) -> None:
    """Once the executor listens, take the run dir away from the sandbox user.

    The executor needed it writable to make its socket and delete the token file; afterwards sandboxed code
    (the same uid) could otherwise replace the socket or use the directory as scratch space. The socket
    itself stays connectable (0666, and the host connects as root).
    """
    token = os.path.join(dirs.run, TOKEN_NAME)
    if os.path.lexists(token):
        os.unlink(token)
    os.chown(dirs.run, 0, 0)
    os.chmod(dirs.run, 0o755)


def remove(dirs: HostDirs) -> None:
    """Unmount the workspace, then delete the directory; a no-op for what is already gone."""
    ws.unmount(dirs.image, dirs.workspace)
    if os.path.lexists(dirs.root):
        shutil.rmtree(dirs.root, onerror=force_remove)


def container_options(
    spec: SandboxSpec,
    *,
    name: str,
    dirs: HostDirs,
    kind: str,
    env: dict[str, str],
    uid: int,
    gid: int,
    data_dir: str,
    tmp_mb: int | None = None,
    max_output: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `containers.create(image, ...)`."""
    res = spec.resources
    memory = int(res.memory_mb) * MIB
    # /tmp and /dev/shm are tmpfs, charged to the container's memory: each a quarter of it by default, so a
    # full /tmp still leaves room for the executor and the execution that filled it.
    scratch_mb = tmp_mb or max(16, int(res.memory_mb) // 4)
    # No nproc rlimit: RLIMIT_NPROC counts every process of the uid on the host, across all sandboxes; the
    # container's pids cgroup is the per-sandbox bound. No fsize rlimit either: the workspace's own size is
    # the bound, and a write past it must fail with ENOSPC, not EFBIG (or SIGXFSZ, which kills non-Python code).
    command = ["python3", "-m", "executor", "--socket", f"{RUN_DIR}/{SOCKET_NAME}", "--workspace", WORKSPACE]
    command += ["--token-file", f"{RUN_DIR}/{TOKEN_NAME}", "--packages", PACKAGES]
    command += ["--session-id", spec.session_id, "--memory-mb", str(int(res.memory_mb))]
    command += ["--limit", f"nofile={OPEN_FILES}"]
    if max_output is not None:
        command += ["--max-output", str(int(max_output))]
    volumes = {
        dirs.run: {"bind": RUN_DIR, "mode": "rw"},
        dirs.packages: {"bind": PACKAGES, "mode": "ro"},
    }
    tmpfs = {"/tmp": f"rw,nosuid,nodev,size={scratch_mb}m,mode=1777"}
    if kind == "loop":
        volumes[dirs.workspace] = {"bind": WORKSPACE, "mode": "rw"}
    else:
        tmpfs[WORKSPACE] = ws.tmpfs_options(res.disk_mb, uid, gid)
    labels = {str(k): str(v) for k, v in spec.labels.items()}
    labels.update(
        {
            LABEL_MANAGED: "true",
            LABEL_SESSION: spec.session_id,
            LABEL_DATA_DIR: data_dir,
            LABEL_DIR: os.path.basename(dirs.root),
            LABEL_WORKSPACE: kind,
            LABEL_DISK_MB: str(int(res.disk_mb)),
        }
    )
    return {
        "command": command,
        "name": name,
        "hostname": "sandbox",
        # The uid is forced here rather than trusted to the image's USER line.
        "user": f"{uid}:{gid}",
        # `python3 -m executor` finds the package through the working directory (no PYTHONPATH to leak).
        "working_dir": EXECUTOR_HOME,
        "environment": env,
        "labels": labels,
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": tmpfs,
        "shm_size": f"{scratch_mb}m",
        "volumes": volumes,
        "pids_limit": int(res.max_processes),
        "nano_cpus": int(float(res.cpu) * 1e9),
        "mem_limit": memory,
        "memswap_limit": memory,  # equal: no swap beyond the memory limit
        "log_config": {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
        "stdin_open": False,
        "tty": False,
    }
