"""The docker backend: one hardened container per session; its executor is reached over a bind-mounted Unix socket.

Host layout: `<data_dir>/docker/<key>/` holds `run/` (the container's /run/sandbox: the executor's socket, and
the token file until the executor has read and deleted it), `workspace/` (the container's /workspace: the
mount point of `workspace.img`, see workspace.py) and `packages/` (its read-only /opt/packages). `<key>`
is the session id when the socket path fits in sun_path (108 bytes), else a hash of it.

The container's flags are in spec.py (network none, cap_drop ALL, no-new-privileges, forced non-root
uid, read-only root, tmpfs /tmp, pids/cpu/memory limits without swap, labels). The engine is the record:
labels name the session, the data dir and the host directory of each container, so a restarted control
plane finds everything with one label query and nothing else is stored. The token never appears on a
command line or in `docker inspect`: it is a 0400 file in the run dir that the executor reads and deletes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors

from runtime import host_files, readiness
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
from runtime.docker import installer as docker_installer
from runtime.docker import spec as ds
from runtime.docker import workspace as ws
from runtime.docker.engine import (
    UsageSampler,
    create_container,
    engine_failure,
    logs_tail,
    remove_container,
    update_limits,
)
from runtime.environment import check_env
from runtime.packages import installer as inst

logger = logging.getLogger(__name__)

DEFAULT_IMAGE = "sandbox-template-python-basic:latest"
NAME_PREFIX = "sandbox-"
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
LIVE_STATES = ("running", "restarting", "paused")
# How long a half-made sandbox (a directory without a container, or a container never started) is presumed
# to belong to a create still in progress, before another create of the same session may sweep it.
CREATE_GRACE = 60.0


class DockerRuntime(Runtime):
    """Sessions as hardened containers from template images, on one Docker engine.

    `workspace`: "loop" (an ext4 image per session, loop-mounted on the host: a real disk limit; needs root),
    "tmpfs" (a size-limited tmpfs, charged to the container's memory) or "auto" (loop where possible).
    """

    name = "docker"

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        docker_url: str | None = None,
        default_image: str = DEFAULT_IMAGE,
        workspace: str = "auto",
        sandbox_uid: int = 1000,
        tmp_mb: int | None = None,
        startup_timeout: float = 30.0,
        engine_timeout: float = 60.0,
        max_output: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        if workspace not in ("auto", "loop", "tmpfs"):
            raise RuntimeFailure(
                f"docker workspace must be auto, loop or tmpfs, not {workspace!r}", permanent=True
            )
        self.data_dir = os.path.abspath(data_dir or os.environ.get("SANDBOX_DATA_DIR") or "data")
        self.sandboxes_dir = os.path.join(self.data_dir, "docker")
        # Blank formatted workspace images, one per size, copied for each loop workspace (spec.prepare).
        self.images_dir = os.path.join(self.data_dir, "sandbox-images")
        self.docker_url = docker_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.default_image = default_image
        self.workspace_mode = workspace
        self.uid = self.gid = int(sandbox_uid)
        self.tmp_mb = tmp_mb
        self.startup_timeout = startup_timeout
        self.engine_timeout = engine_timeout
        self.max_output = max_output
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.node = socket.gethostname()
        self._client: Any = None
        self._lock = threading.Lock()
        self._usage = UsageSampler()

    @classmethod
    def config_from_settings(cls, settings: Any) -> dict[str, Any]:
        """DATA_DIR and SANDBOX_DOCKER_URL (empty: DOCKER_HOST, else the local engine's socket)."""
        data_dir = getattr(settings, "DATA_DIR", None)
        return {
            "data_dir": str(data_dir) if data_dir else None,
            "docker_url": getattr(settings, "SANDBOX_DOCKER_URL", "") or None,
        }

    # -- paths and names --

    def _key(self, session_id: str) -> str:
        """The session's directory name: its id, or a hash of it when the socket path would not fit."""
        if not SESSION_ID.match(session_id or ""):
            raise RuntimeFailure(f"invalid session id for the docker runtime: {session_id!r}", permanent=True)
        for key in (session_id, "h-" + hashlib.sha256(session_id.encode()).hexdigest()[:24]):
            if len(os.path.join(self.sandboxes_dir, key, "run", ds.SOCKET_NAME).encode()) <= UNIX_PATH_MAX:
                return key
        raise RuntimeFailure(
            f"data dir {self.data_dir} is too long for Unix socket paths; use a shorter one", permanent=True
        )

    def dirs(self, session_id: str) -> ds.HostDirs:
        return ds.HostDirs(os.path.join(self.sandboxes_dir, self._key(session_id)))

    def socket_path(self, session_id: str) -> str:
        return self.dirs(session_id).socket

    def packages_dir(self, session_id: str) -> str:
        """Where dependencies for the session are installed from outside; the sandbox sees it read-only."""
        return self.dirs(session_id).packages

    def container_name(self, session_id: str) -> str:
        return NAME_PREFIX + session_id

    def _ref(self, handle: SandboxHandle) -> str:
        return handle.sandbox_id or self.container_name(handle.session_id)

    def _dirs_for(self, handle: SandboxHandle, client: Any = None) -> ds.HostDirs:
        """The sandbox's host directory, which need not be named after `handle.session_id`.

        A claimed warm sandbox keeps the directory of the warm row it was made for while its handle carries
        the claiming session's id. So the container's own label decides; then the endpoint (the socket lives
        in <root>/run/); the session id only when neither is there. Whatever the source, only a directory
        directly under this runtime's sandboxes dir is ever used (and later deleted).
        """
        candidates = []
        if client is not None and handle.sandbox_id:
            try:
                labels = client.api.inspect_container(handle.sandbox_id)["Config"].get("Labels") or {}
                candidates.append(os.path.join(self.sandboxes_dir, labels.get(ds.LABEL_DIR, "")))
            except docker.errors.NotFound:
                pass
            except Exception as exc:
                raise engine_failure(exc, f"cannot inspect sandbox {handle.session_id}") from exc
        if handle.endpoint:
            candidates.append(os.path.dirname(os.path.dirname(handle.endpoint)))
        for root in candidates:
            root = os.path.normpath(root)
            if os.path.dirname(root) == self.sandboxes_dir and SESSION_ID.match(os.path.basename(root)):
                return ds.HostDirs(root)
        return self.dirs(handle.session_id)

    # -- engine --

    def docker(self) -> Any:
        """The engine client, made on first use: a down engine must not break importing or constructing."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = docker.DockerClient(
                        base_url=self.docker_url, version="auto", timeout=int(self.engine_timeout)
                    )
                except Exception as exc:  # docker, requests and socket errors all mean "unreachable"
                    raise engine_failure(exc, f"cannot reach the Docker engine at {self.docker_url}") from exc
            return self._client

    def _workspace_kind(self) -> str:
        if self.workspace_mode != "auto":
            return self.workspace_mode
        return "loop" if ws.loop_unsupported_reason() is None else "tmpfs"

    # -- Runtime --

    def check(self) -> None:
        """Raise RuntimeFailure unless the engine answers, the data dir is usable and workspaces can be made."""
        try:
            self.docker().ping()
        except Exception as exc:
            raise engine_failure(exc, f"the Docker engine at {self.docker_url} does not answer") from exc
        if self.workspace_mode == "loop" and (reason := ws.loop_unsupported_reason()):
            raise RuntimeFailure(f"loop-mounted workspaces are unavailable: {reason}", permanent=True)
        try:
            os.makedirs(self.sandboxes_dir, mode=0o711, exist_ok=True)
        except OSError as exc:
            raise RuntimeFailure(f"data dir {self.data_dir} is unusable: {exc}", permanent=True) from exc

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        dirs = self.dirs(spec.session_id)
        image = spec.image or self.default_image
        try:
            env = check_env(spec.env)
        except ValueError as exc:
            raise RuntimeFailure(str(exc), permanent=True) from exc
        client = self.docker()
        name = self.container_name(spec.session_id)
        self._clear_leftover(client, spec.session_id, name, dirs)
        kind = self._workspace_kind()
        handle = SandboxHandle(
            backend=self.name,
            sandbox_id="",
            session_id=spec.session_id,
            endpoint=dirs.socket,
            token=spec.token,
            node=self.node,
            workspace_path=dirs.workspace if kind == "loop" else "",
        )
        os.makedirs(self.sandboxes_dir, mode=0o711, exist_ok=True)
        try:
            os.mkdir(dirs.root, 0o700)
        except FileExistsError:  # a concurrent create of the same session got here first; leave it be
            raise RuntimeFailure(
                f"a sandbox for session {spec.session_id} is being created", permanent=True
            ) from None
        container: Any = None
        try:
            ds.prepare(dirs, spec, kind, self.uid, self.gid, template_dir=self.images_dir)
            options = ds.container_options(
                spec,
                name=name,
                dirs=dirs,
                kind=kind,
                env=env,
                uid=self.uid,
                gid=self.gid,
                data_dir=self.data_dir,
                tmp_mb=self.tmp_mb,
                max_output=self.max_output,
            )
            container = create_container(client, image, options)
            handle = dataclasses.replace(handle, sandbox_id=container.id)
            container.start()
            self._wait_healthy(handle, container)
            ds.seal_run_dir(dirs)
        except BaseException as exc:
            # Nothing may outlive a failed create: no container, no mount, no directory.
            tail = logs_tail(container)
            try:
                self._teardown(client, container.id if container is not None else name, dirs)
            except Exception:
                logger.exception("cleanup after the failed create of sandbox %s", spec.session_id)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and friends pass through unchanged
            raise self._create_failure(exc, spec.session_id, image, tail) from exc
        return handle

    def destroy(self, handle: SandboxHandle) -> None:
        client = self.docker()
        dirs = self._dirs_for(handle, client)
        self._teardown(client, self._ref(handle), dirs)
        if handle.sandbox_id:
            self._usage.forget(handle.sandbox_id)

    def inspect(self, handle: SandboxHandle) -> SandboxState:
        client = self.docker()
        try:
            container = client.containers.get(self._ref(handle))
        except docker.errors.NotFound:
            return SandboxState(exists=False, running=False, detail="no such container")
        except Exception as exc:
            raise engine_failure(exc, f"cannot inspect sandbox {handle.session_id}") from exc
        state = container.attrs.get("State") or {}
        running = bool(state.get("Running")) and not state.get("Paused")
        detail = str(state.get("Status", "unknown"))
        if state.get("Status") in ("exited", "dead"):
            detail += (
                f" (exit code {state.get('ExitCode')}{', out of memory' if state.get('OOMKilled') else ''})"
            )
            if state.get("Error"):
                detail += f": {state['Error']}"
        if running and not os.path.exists(handle.endpoint or self.socket_path(handle.session_id)):
            running, detail = False, "the executor's socket is gone"
        cpu, memory = self._usage.sample(client, container) if running else (None, None)
        return SandboxState(exists=True, running=running, detail=detail, cpu_percent=cpu, memory_mb=memory)

    def list_managed(self) -> list[SandboxHandle]:
        """Every container labelled as ours and made from this data dir, running or not.

        Scoping by data dir keeps two control planes (or a test run next to a dev server) on one engine from
        sweeping each other's sandboxes. The token is kept nowhere the engine shows, so these handles carry
        an empty one; the session row has the real one.
        """
        filters = {"label": [f"{ds.LABEL_MANAGED}=true", f"{ds.LABEL_DATA_DIR}={self.data_dir}"]}
        try:
            containers = self.docker().containers.list(all=True, filters=filters, ignore_removed=True)
        except Exception as exc:
            raise engine_failure(exc, "cannot list sandbox containers") from exc
        handles = []
        for container in containers:
            labels = container.labels or {}
            dirs = ds.HostDirs(os.path.join(self.sandboxes_dir, labels.get(ds.LABEL_DIR, "")))
            handles.append(
                SandboxHandle(
                    backend=self.name,
                    sandbox_id=container.id,
                    session_id=labels.get(ds.LABEL_SESSION, ""),
                    endpoint=dirs.socket,
                    token="",
                    node=self.node,
                    workspace_path=dirs.workspace if labels.get(ds.LABEL_WORKSPACE) == "loop" else "",
                )
            )
        return sorted(handles, key=lambda h: h.session_id)

    def executor(self, handle: SandboxHandle) -> ExecutorClient:
        return ExecutorClient(
            handle.endpoint,
            handle.token,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def salvage_files(self, handle: SandboxHandle) -> Iterator[tuple[str, host_files.Opener]] | None:
        """A loop workspace stays mounted on this host until destroy: its regular files, no symlink followed.
        A tmpfs workspace lived in the container and is gone with it."""
        root = host_files.local_directory(handle.workspace_path, handle.node)
        return host_files.regular_files(root) if root else None

    def update_resources(self, handle: SandboxHandle, resources: Resources) -> None:
        """New cpu, memory and process limits for a live container (a claimed warm sandbox).

        The workspace size is settled first, so a refusal leaves the container as it was: a loop workspace
        can grow where the kernel allows online ext4 resizing (CAP_SYS_RESOURCE), never shrink; a tmpfs
        workspace keeps its size. One inspect gives the limits in force, and the engine is asked to change
        them only when they differ (engine.update_limits).
        """
        dirs = self._dirs_for(handle)
        attrs = self._attrs(handle)
        if os.path.exists(dirs.image):
            try:
                ws.grow_loop(dirs.image, dirs.workspace, resources.disk_mb)
            except (ws.WorkspaceError, OSError) as exc:
                raise RuntimeFailure(
                    f"cannot resize the workspace of sandbox {handle.session_id} to "
                    f"{resources.disk_mb} MiB: {exc}",
                    permanent=True,
                ) from exc
        else:
            labels = attrs["Config"].get("Labels") or {}
            if labels.get(ds.LABEL_DISK_MB, str(resources.disk_mb)) != str(resources.disk_mb):
                raise RuntimeFailure(
                    f"the tmpfs workspace of sandbox {handle.session_id} has a fixed size "
                    f"({labels[ds.LABEL_DISK_MB]} MiB)",
                    permanent=True,
                )
        update_limits(
            self.docker(),
            self._ref(handle),
            cpu=resources.cpu,
            memory_mb=resources.memory_mb,
            max_processes=resources.max_processes,
            current=attrs.get("HostConfig") or {},
        )

    def install_packages(self, handle: SandboxHandle, request: PackageInstall) -> InstalledPackages:
        """Wheels downloaded by the control plane, installed by a one-shot container from the sandbox's own
        image with no network (docker/installer.py)."""
        client = self.docker()
        try:
            image = client.api.inspect_container(self._ref(handle))["Image"]
        except docker.errors.NotFound:
            raise RuntimeFailure(f"sandbox {handle.session_id} does not exist") from None
        except Exception as exc:
            raise engine_failure(exc, f"cannot inspect sandbox {handle.session_id}") from exc
        dirs = self._dirs_for(handle, client)
        if not os.path.isdir(dirs.packages):
            raise RuntimeFailure(f"sandbox {handle.session_id} has no package dir")
        with inst.install_lock(dirs.root):
            return docker_installer.install(
                client,
                request,
                image=image,
                dirs=dirs,
                session_id=handle.session_id,
                data_dir=self.data_dir,
            )

    def _attrs(self, handle: SandboxHandle) -> dict[str, Any]:
        try:
            return self.docker().api.inspect_container(self._ref(handle))
        except Exception as exc:
            raise engine_failure(exc, f"cannot inspect sandbox {handle.session_id}") from exc

    # -- internals --

    def _wait_healthy(self, handle: SandboxHandle, container: Any) -> None:
        """Wait for /health on the host socket; fail fast when the container exits (bad image, executor crash)."""

        def alive() -> None:
            container.reload()
            if container.status not in ("created", "running"):
                code = (container.attrs.get("State") or {}).get("ExitCode")
                raise RuntimeFailure(
                    f"sandbox {handle.session_id}: the container exited (status {code}) "
                    "before its executor was ready"
                )

        client = ExecutorClient(handle.endpoint, handle.token, connect_timeout=1.0, read_timeout=5.0)
        # The container's state is an engine round trip: asked every quarter second, not on every poll.
        readiness.wait_healthy(
            client,
            self.startup_timeout,
            alive=alive,
            alive_every=0.25,
            what=f"sandbox {handle.session_id}: the executor",
        )

    def _clear_leftover(self, client: Any, session_id: str, name: str, dirs: ds.HostDirs) -> None:
        """Refuse to replace a live sandbox or a stranger's container; sweep a dead sandbox's remains."""
        try:
            existing: Any = client.containers.get(name)
        except docker.errors.NotFound:
            existing = None
        except Exception as exc:
            raise engine_failure(exc, f"cannot look up container {name}") from exc
        if existing is not None:
            labels = existing.labels or {}
            if labels.get(ds.LABEL_SESSION) != session_id or labels.get(ds.LABEL_DATA_DIR) != self.data_dir:
                raise RuntimeFailure(
                    f"a container named {name} already exists and is not this runtime's "
                    f"sandbox for session {session_id}; remove or rename it",
                    permanent=True,
                )
            if existing.status in LIVE_STATES:
                raise RuntimeFailure(
                    f"a sandbox for session {session_id} is already running ({name})", permanent=True
                )
            if existing.status == "created" and dirs.age() < CREATE_GRACE:
                raise RuntimeFailure(f"a sandbox for session {session_id} is being created", permanent=True)
        elif not os.path.lexists(dirs.root):
            return
        elif dirs.age() < CREATE_GRACE:
            raise RuntimeFailure(f"a sandbox for session {session_id} is being created", permanent=True)
        self._teardown(client, existing.id if existing is not None else name, dirs)

    def _teardown(self, client: Any, ref: str, dirs: ds.HostDirs) -> None:
        """Remove the container, then the workspace mount and the directory; each step tolerates absence.

        The container goes first, and an unreachable engine stops everything: a live container still uses
        the directories, and a retry must find them.
        """
        remove_container(client, ref)
        try:
            ds.remove(dirs)
        except ws.WorkspaceError as exc:
            raise RuntimeFailure(f"cannot unmount the workspace at {dirs.workspace}: {exc}") from exc

    def _create_failure(self, exc: Exception, session_id: str, image: str, tail: str) -> RuntimeFailure:
        if isinstance(exc, RuntimeFailure):
            return RuntimeFailure(f"{exc.message}{tail}", permanent=exc.permanent)
        if isinstance(exc, ws.WorkspaceError):
            return RuntimeFailure(f"cannot make the workspace of sandbox {session_id}: {exc}")
        # A missing image and a name clash come out permanent, an unreachable engine transient.
        return engine_failure(exc, f"cannot start sandbox {session_id} from image {image}")
