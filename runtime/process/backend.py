"""The process backend: one bubblewrap-confined executor per session on this host (the embedded default).

Layout: `<data_dir>/sandboxes/<session_id>/` holds `workspace/` (the sandbox's /workspace), `run/` (its
/run/sandbox: the executor's socket, and the token file until the executor has read it), `packages/` (its
read-only /opt/packages), `etc/` (generated passwd, hosts ...), `executor.log` (the daemon's stderr) and
`sandbox.json`, the record that lets a restarted control plane find, inspect and destroy the sandbox; who
owns what, the workspace's loop image and the stage bwrap reads them through are in process/workspace.py.

Identity: with a root control plane each session gets its own unprivileged host uid (host_uids.py); the
supervisor joins the cgroups as root, then `setpriv` drops to that uid, so bubblewrap runs unprivileged
and can only map the sandbox's uid 1000 onto it. Never host uid 0: a sandbox mapped to root could write
/proc/sys/kernel/core_pattern and have the kernel run its program as host root. A non-root control plane
runs every session under its own uid (no other uid is available to it): see docs/architecture.md for what
that gives up.

Process tree, and why: `sh` (the session's supervisor, in its own session and process group, inside the
sandbox's cgroup) -> [`setpriv` to the session's uid, which execs] `bwrap --die-with-parent` -> the executor. DESIGN.md asks for die-with-parent, and also
for sandboxes that survive a control-plane restart; bwrap's die-with-parent is a parent-death signal on
bwrap itself, so were bwrap a direct child of the control plane, every sandbox would die with the web or
worker process that created it (worse: with the *thread*, since Linux ties the signal to the creating
thread, and worker threads come and go). The shell in between is that parent instead: it outlives the
control plane (re-parented to init), and when it dies - destroy kills its process group - bwrap and the
whole sandbox pid namespace die with it. The shell also joins the cgroup before it starts bwrap, so no
sandboxed process ever runs outside its limits (no race between spawn and a later cgroup write).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from runtime import bwrap as bw
from runtime import host_files, readiness
from runtime import loop_workspace as lw
from runtime.base import (
    SESSION_ID,
    InstalledPackages,
    PackageInstall,
    Resources,
    Runtime,
    RuntimeFailure,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
)
from runtime.client import ExecutorClient
from runtime.environment import check_env
from runtime.packages.installer import install_lock
from runtime.process import host_uids, launch, seccomp
from runtime.process import installer as process_installer
from runtime.process import record as pr
from runtime.process import workspace as pw
from runtime.process.cgroups import CgroupManager, SandboxCgroup
from runtime.process.launch import LOG_NAME, SOCKET_NAME, TOKEN_NAME

logger = logging.getLogger(__name__)

UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
DEFAULT_TMP_MB = 64
DEFAULT_STAGE_DIR = "/run/sandbox-control-plane"


class ProcessRuntime(Runtime):
    """Sandboxes as bubblewrap-confined executor processes on this host, limited by per-sandbox cgroups."""

    name = "process"

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        allow_unisolated: bool = False,
        bwrap_path: str | None = None,
        python_path: str | None = None,
        startup_timeout: float = 10.0,
        use_cgroups: bool = True,
        max_output: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        uid_range: tuple[int, int] = host_uids.DEFAULT_RANGE,
        tmp_size_mb: int = DEFAULT_TMP_MB,
        allow_no_seccomp: bool = False,
        stage_dir: str = DEFAULT_STAGE_DIR,
    ) -> None:
        self.data_dir = os.path.abspath(data_dir or os.environ.get("SANDBOX_DATA_DIR") or "data")
        self.sandboxes_dir = os.path.join(self.data_dir, "sandboxes")
        self.allow_unisolated = allow_unisolated
        self.bwrap_path = bwrap_path if bwrap_path is not None else shutil.which("bwrap")
        if python_path is None:
            python_path = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        self.python_path = python_path
        self.startup_timeout = startup_timeout
        self.max_output = max_output
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.cgroups = CgroupManager() if use_cgroups else None
        # Cgroups of every data dir on the host share one parent; the tag keeps two control planes (a dev
        # server and a test run, say) from ever touching each other's, even with equal session ids.
        self._cgroup_tag = hashlib.sha256(self.data_dir.encode()).hexdigest()[:8]
        self.tmp_size_mb = int(tmp_size_mb)
        self.allow_no_seccomp = allow_no_seccomp
        # Root: a host uid per session, drawn from the range, and a total disk limit where loop devices work.
        # Not root: every session runs as this process's uid, and only the per-file limit holds (see docs).
        self.privileged = os.geteuid() == 0
        self.uids = (
            host_uids.UidAllocator(os.path.join(self.data_dir, "sandbox-uids"), uid_range)
            if self.privileged
            else None
        )
        self.stage_parent = os.path.join(stage_dir, self._cgroup_tag)
        self.disk_limit_reason = lw.loop_unsupported_reason()
        self._warned: set[str] = set()  # what has been logged once already
        self.node = socket.gethostname()
        self._interpreter: bw.Interpreter | None = None
        self._children: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    @classmethod
    def config_from_settings(cls, settings: Any) -> dict[str, Any]:
        """DATA_DIR, SANDBOX_ALLOW_UNISOLATED, SANDBOX_PROCESS_UID_RANGE ("200000-299999"), SANDBOX_TMP_SIZE
        (MiB) and SANDBOX_ALLOW_NO_SECCOMP; a malformed uid range is a permanent RuntimeFailure."""
        uid_range = getattr(settings, "SANDBOX_PROCESS_UID_RANGE", host_uids.DEFAULT_RANGE)
        if isinstance(uid_range, str):
            try:
                uid_range = host_uids.parse_range(uid_range)
            except host_uids.UidRangeError as exc:
                raise RuntimeFailure(f"SANDBOX_PROCESS_UID_RANGE: {exc}", permanent=True) from exc
        data_dir = getattr(settings, "DATA_DIR", None)
        return {
            "data_dir": str(data_dir) if data_dir else None,
            "allow_unisolated": bool(getattr(settings, "SANDBOX_ALLOW_UNISOLATED", False)),
            "uid_range": tuple(uid_range),
            "tmp_size_mb": int(getattr(settings, "SANDBOX_TMP_SIZE", DEFAULT_TMP_MB)),
            "allow_no_seccomp": bool(getattr(settings, "SANDBOX_ALLOW_NO_SECCOMP", False)),
        }

    # -- paths --

    def session_dir(self, session_id: str) -> str:
        if not SESSION_ID.match(session_id or ""):
            raise RuntimeFailure(
                f"invalid session id for the process runtime: {session_id!r}", permanent=True
            )
        return os.path.join(self.sandboxes_dir, session_id)

    def workspace_dir(self, session_id: str) -> str:
        return os.path.join(self.session_dir(session_id), "workspace")

    def packages_dir(self, session_id: str) -> str:
        return os.path.join(self.session_dir(session_id), "packages")

    def socket_path(self, session_id: str) -> str:
        return os.path.join(self.session_dir(session_id), "run", SOCKET_NAME)

    @property
    def isolated(self) -> bool:
        return bool(self.bwrap_path) and os.access(self.bwrap_path or "", os.X_OK)

    # -- Runtime --

    def check(self) -> None:
        """Raise RuntimeFailure when sandboxes cannot be made here: no bwrap, interpreter, seccomp filter
        (unless allowed), setpriv (root) or data dir. Logs once when the disk limit can only be per file."""
        if not self.isolated and not self.allow_unisolated:
            raise RuntimeFailure(
                f"bubblewrap is not available ({self.bwrap_path or 'bwrap not on PATH'})", permanent=True
            )
        if self.isolated:
            self.resolve_interpreter()
            filter_fd = self.seccomp_fd()  # compiles (and caches) the filter, or names the setting
            if filter_fd is not None:
                os.close(filter_fd)
        try:
            os.makedirs(self.sandboxes_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RuntimeFailure(f"data dir {self.data_dir} is unusable: {exc}", permanent=True) from exc
        if not os.access(self.sandboxes_dir, os.W_OK | os.X_OK):
            raise RuntimeFailure(f"data dir {self.sandboxes_dir} is not writable", permanent=True)
        if self.isolated and self.privileged and shutil.which("setpriv", path=bw.PATH) is None:
            raise RuntimeFailure(
                "setpriv (util-linux) is not installed: a root control plane needs it to start sandboxes "
                "under their own host uids",
                permanent=True,
            )
        if self.disk_limit_reason and "disk" not in self._warned:
            self._warned.add("disk")
            logger.warning(
                "process sandboxes get a per-file size limit only, not a total disk limit: %s",
                self.disk_limit_reason,
            )

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        root = self.session_dir(spec.session_id)
        if not self.isolated:
            if not self.allow_unisolated:
                raise RuntimeFailure(
                    f"bubblewrap is not available ({self.bwrap_path or 'bwrap not on PATH'}); install it "
                    "(apt-get install bubblewrap) or set SANDBOX_ALLOW_UNISOLATED=true to run code "
                    "unconfined",
                    permanent=True,
                )
            logger.warning(
                "starting sandbox %s WITHOUT isolation: bubblewrap is not available", spec.session_id
            )
        sock = self.socket_path(spec.session_id)
        # Under bubblewrap the executor binds the short /run/sandbox path and the client reaches a long host
        # path through its directory; only an unconfined executor binds the host path itself.
        if not self.isolated and len(sock.encode()) > UNIX_PATH_MAX:
            raise RuntimeFailure(
                f"socket path {sock} is too long for a Unix socket; use a shorter data dir", permanent=True
            )
        try:
            env = check_env(spec.env)
        except ValueError as exc:
            raise RuntimeFailure(str(exc), permanent=True) from exc
        self._clear_leftover(spec.session_id)
        handle = SandboxHandle(
            backend=self.name,
            sandbox_id=spec.session_id,
            session_id=spec.session_id,
            endpoint=sock,
            token=spec.token,
            node=self.node,
            workspace_path=self.workspace_dir(spec.session_id),
        )
        os.makedirs(self.sandboxes_dir, mode=0o700, exist_ok=True)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:  # a concurrent create of the same session got here first; leave it be
            raise RuntimeFailure(
                f"a sandbox for session {spec.session_id} is being created", permanent=True
            ) from None
        proc: subprocess.Popen | None = None
        cgroup: SandboxCgroup | None = None
        meta: dict[str, Any] = {}
        try:
            cgroup, meta = launch.prepare(self, spec, root)
            proc = launch.spawn(self, spec, root, env, cgroup, meta)
            with self._lock:
                self._children[spec.session_id] = proc
            self._wait_healthy(handle, proc, root, meta)
        except BaseException as exc:
            # Nothing may outlive a failed create: no process, no cgroup, no mount, no uid, no directory.
            tail = pr.log_tail(os.path.join(root, LOG_NAME))
            self._teardown(spec.session_id, root, proc, cgroup, meta=meta or None)
            if isinstance(exc, RuntimeFailure):
                raise RuntimeFailure(f"{exc.message}{tail}", permanent=exc.permanent) from exc
            if isinstance(exc, OSError):
                raise RuntimeFailure(f"cannot start sandbox {spec.session_id}: {exc}{tail}") from exc
            raise
        return handle

    def destroy(self, handle: SandboxHandle) -> None:
        session_id = handle.sandbox_id or handle.session_id
        root = self.session_dir(session_id)
        meta = pr.read_record(root)
        with self._lock:
            proc = self._children.pop(session_id, None)
        cgroup = SandboxCgroup.from_json(meta.get("cgroup")) if meta else None
        if cgroup is None:
            # A create that died between mkdir and writing its record: the cgroup name is still known.
            cgroup = self._known_cgroup(session_id)
        self._teardown(session_id, root, proc, cgroup, meta=meta)

    def inspect(self, handle: SandboxHandle) -> SandboxState:
        session_id = handle.sandbox_id or handle.session_id
        root = self.session_dir(session_id)
        meta = pr.read_record(root)
        if meta is None:
            exists = os.path.isdir(root)
            return SandboxState(
                exists=exists, running=False, detail="no record" if exists else "no such sandbox"
            )
        with self._lock:
            proc = self._children.get(session_id)
        if proc is not None:
            proc.poll()  # reap a supervisor that exited, so its pid reads as gone
        running = pr.alive(meta.get("pid"), meta.get("start_time"))
        cgroup = SandboxCgroup.from_json(meta.get("cgroup"))
        memory = cgroup.memory_mb() if cgroup is not None and running else None
        detail = "running" if running else "the executor process has exited"
        if running and not os.path.exists(self.socket_path(session_id)):
            running, detail = False, "the executor's socket is gone"
        return SandboxState(exists=True, running=running, detail=detail, memory_mb=memory)

    def list_managed(self) -> list[SandboxHandle]:
        """Every session directory under data_dir, alive or not: state sync decides what to do with each.

        The token is not kept on disk, so these handles carry an empty one; the session row has the real one.
        """
        if self.privileged:
            pw.sweep_stages(self.stage_parent, self.sandboxes_dir)
        try:
            names = sorted(os.listdir(self.sandboxes_dir))
        except FileNotFoundError:
            return []
        handles = []
        for name in names:
            if not SESSION_ID.match(name) or not os.path.isdir(os.path.join(self.sandboxes_dir, name)):
                continue
            meta = pr.read_record(os.path.join(self.sandboxes_dir, name)) or {}
            handles.append(
                SandboxHandle(
                    backend=self.name,
                    sandbox_id=name,
                    session_id=str(meta.get("session_id", name)),
                    endpoint=self.socket_path(name),
                    token="",
                    node=str(meta.get("node", self.node)),
                    workspace_path=self.workspace_dir(name),
                )
            )
        return handles

    def executor(self, handle: SandboxHandle) -> ExecutorClient:
        return ExecutorClient(
            handle.endpoint,
            handle.token,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def salvage_files(self, handle: SandboxHandle) -> Iterator[tuple[str, host_files.Opener]] | None:
        """The workspace directory's regular files, read on this host without following any symlink."""
        root = host_files.local_directory(handle.workspace_path, handle.node)
        return host_files.regular_files(root) if root else None

    def update_resources(self, handle: SandboxHandle, resources: Resources) -> None:
        session_id = handle.sandbox_id or handle.session_id
        meta = pr.read_record(self.session_dir(session_id))
        cgroup = SandboxCgroup.from_json(meta.get("cgroup")) if meta else None
        if cgroup is None or not cgroup.exists():
            raise RuntimeFailure(
                f"sandbox {session_id} has no cgroup: its limits were fixed as rlimits at start",
                permanent=True,
            )
        dirs = pw.SessionDirs(self.session_dir(session_id))
        if meta and meta.get("disk") == "loop" and os.path.exists(dirs.image):
            # First, so a refusal leaves the sandbox as it was: ext4 grows online but cannot shrink.
            try:
                lw.grow_loop(dirs.image, dirs.workspace, resources.disk_mb)
            except (lw.WorkspaceError, OSError) as exc:
                raise RuntimeFailure(
                    f"cannot resize the workspace of sandbox {session_id}: {exc}", permanent=True
                ) from exc
        try:
            cgroup.apply(resources)
        except OSError as exc:  # e.g. a memory limit below what the sandbox already uses
            raise RuntimeFailure(f"cannot apply new limits to sandbox {session_id}: {exc}") from exc

    def install_packages(self, handle: SandboxHandle, request: PackageInstall) -> InstalledPackages:
        """Wheels downloaded by the control plane, installed offline into a staging dir, swapped in.

        pip runs under its own bubblewrap sandbox with no network, as an unprivileged uid, able to write
        only the staging dir and its /tmp, inside the session's cgroups (so the install counts against the
        session's memory and process limits); see installer.py.
        """
        session_id = handle.sandbox_id or handle.session_id
        root = self.session_dir(session_id)
        meta = pr.read_record(root)
        if meta is None or not os.path.isdir(self.packages_dir(session_id)):
            raise RuntimeFailure(f"sandbox {session_id} does not exist")
        if not self.isolated and not self.allow_unisolated:
            raise RuntimeFailure("bubblewrap is not available to confine the installer", permanent=True)
        cgroup = SandboxCgroup.from_json(meta.get("cgroup"))
        procs = cgroup.procs_files() if cgroup is not None and cgroup.exists() else []
        interpreter = self.resolve_interpreter() if self.isolated else bw.Interpreter(self.python_path)
        with install_lock(root):
            return process_installer.install(
                request,
                root=root,
                packages=self.packages_dir(session_id),
                bwrap=self.bwrap_path if self.isolated else None,
                interpreter=interpreter,
                prefix=["/bin/sh", "-c", launch.SUPERVISOR, f"install-{session_id}"],
                prefix_env={"SANDBOX_CGROUP_PROCS": ":".join(procs)},
            )

    # -- internals --

    def _wait_healthy(
        self, handle: SandboxHandle, proc: subprocess.Popen, root: str, meta: dict[str, Any]
    ) -> None:
        """Wait for /health, failing fast if the supervisor exits (bad bind, bwrap refused, executor crashed);
        then take the token file and the run dir away from the sandbox."""

        def alive() -> None:
            code = proc.poll()
            if code is not None:
                raise RuntimeFailure(
                    f"sandbox {handle.session_id}: the executor exited with status {code} before it was ready"
                )

        client = ExecutorClient(handle.endpoint, handle.token, connect_timeout=1.0, read_timeout=5.0)
        readiness.wait_healthy(
            client, self.startup_timeout, alive=alive, what=f"sandbox {handle.session_id}: the executor"
        )
        token_file = os.path.join(root, "run", TOKEN_NAME)
        if os.path.lexists(token_file):  # the executor deletes it; never leave it for sandboxed code
            os.unlink(token_file)
        # The run dir had to be writable for the executor to make its socket; from now on it is root's alone.
        # Sandboxed code can then neither replace the socket nor use the directory as scratch space outside
        # /workspace and /tmp.
        pw.seal_run(pw.SessionDirs(root), uid=int(meta.get("uid", os.geteuid())))

    def resolve_interpreter(self) -> bw.Interpreter:
        if self._interpreter is None:
            try:
                interpreter = bw.resolve_interpreter(self.python_path)
            except ValueError as exc:
                raise RuntimeFailure(str(exc), permanent=True) from exc
            for prefix in interpreter.prefixes:
                if (self.data_dir + os.sep).startswith(prefix + os.sep):
                    raise RuntimeFailure(
                        f"python prefix {prefix} contains the data dir; binding it into "
                        "sandboxes would expose every session",
                        permanent=True,
                    )
            self._interpreter = interpreter
        return self._interpreter

    def seccomp_fd(self) -> int | None:
        """A memfd with the compiled filter for bwrap; None only when the operator allowed running without."""
        try:
            return seccomp.filter_fd()
        except seccomp.SeccompUnavailable as exc:
            if not self.allow_no_seccomp:
                raise
            if "seccomp" not in self._warned:
                self._warned.add("seccomp")
                logger.warning("process sandboxes run WITHOUT a seccomp filter: %s", exc.message)
            return None

    def stage_path(self, session_id: str) -> str:
        return os.path.join(self.stage_parent, session_id)

    def cgroup_name(self, session_id: str) -> str:
        return f"{self._cgroup_tag}-{session_id}"

    def _known_cgroup(self, session_id: str) -> SandboxCgroup | None:
        if self.cgroups is None or not self.cgroups.available:
            return None
        name = self.cgroup_name(session_id)
        cgroup = SandboxCgroup(
            self.cgroups.version, {k: os.path.join(b, name) for k, b in self.cgroups.bases.items()}
        )
        return cgroup if cgroup.exists() else None

    def _clear_leftover(self, session_id: str) -> None:
        """Refuse to replace a live sandbox; sweep a dead one's remains (a crash mid-create, a lost host)."""
        root = self.session_dir(session_id)
        if not os.path.lexists(root):
            stale = self._known_cgroup(session_id)  # its directory was removed by hand, say
            if stale is not None:
                stale.remove()
            return
        meta = pr.read_record(root)
        if meta and pr.alive(meta.get("pid"), meta.get("start_time")):
            raise RuntimeFailure(f"a sandbox for session {session_id} is already running", permanent=True)
        handle = SandboxHandle(
            backend=self.name, sandbox_id=session_id, session_id=session_id, endpoint="", token=""
        )
        self.destroy(handle)

    def _teardown(
        self,
        session_id: str,
        root: str,
        proc: subprocess.Popen | None,
        cgroup: SandboxCgroup | None,
        *,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if proc is not None:
            # Our own child: its pid cannot be reused until we reap it, so signalling its group is safe
            # exactly while poll() says it has not been reaped. Once reaped, bwrap died with it
            # (die-with-parent) and the cgroup sweep below catches any straggler.
            pid, start = (proc.pid if proc.poll() is None else None), None
        else:
            pid, start = (meta or {}).get("pgid"), (meta or {}).get("start_time")
        if pid and (proc is not None or pr.alive(pid, start)):
            if not (meta or {}).get("isolated", self.isolated):
                # Unconfined executions run in their own sessions, out of the supervisor's process group;
                # SIGTERM lets the executor kill them before the group is killed.
                pr.signal_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + 1.0
                while pr.group_exists(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
            # Killing the supervisor's group kills bwrap; its death kills the sandbox's pid namespace.
            pr.signal_group(pid, signal.SIGKILL)
            pr.wait_gone(pid, start, proc, 5.0)
        errors = []
        if cgroup is not None:
            try:
                cgroup.remove()
            except OSError as exc:
                errors.append(f"cgroup: {exc}")
        stage = (meta or {}).get("stage") or (self.stage_path(session_id) if self.privileged else "")
        errors += pw.remove(pw.SessionDirs(root, stage))
        if self.uids is not None and not errors:
            # Only now: every process of the uid is gone (the cgroup was emptied), so a new session may
            # have it. A create that died before recording its uid is found by the claim's content.
            recorded = (meta or {}).get("uid")
            held = [int(recorded)] if recorded not in (None, os.geteuid()) else self.uids.find(session_id)
            for uid in held:
                self.uids.release(uid, session_id)
        with self._lock:
            if self._children.get(session_id) is proc:
                self._children.pop(session_id, None)
        if errors:
            raise RuntimeFailure(f"sandbox {session_id} not fully removed: {'; '.join(errors)}")
