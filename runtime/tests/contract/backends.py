"""Each backend as the contract suite drives it: its runtime on a throwaway data dir, and what a test needs to
look at from the control plane's side (the sandbox's processes, its workspace, what is left after a destroy).

A local backend (process, docker) keeps the sandbox's workspace and socket on this host: what the control plane
sees is read from the host. A remote one (kubernetes) is reached only through its API: the same questions are
answered through it (an exec in the pod, object reads), never by a host path.

The tests speak only to `Backend`; adding a backend to the suite means one subclass here and one entry in
`BACKENDS`. Nothing in a subclass decides a test's verdict: it only reports what the control plane sees.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
import uuid
from typing import Any

import pytest

from runtime.base import Resources, Runtime, SandboxHandle, SandboxSpec
from runtime.tests.conftest import destroy_all, host_processes_mentioning


class Backend:
    """One backend under test. Sandboxes made through `make` are destroyed by `destroy_made` after each
    test; `close`, at the end of the run, destroys whatever is left and removes the data dir."""

    name = ""
    # What pid 1 inside the sandbox is (the basename of its command), never the host's init.
    init_command = ""
    # Writable places besides /workspace, /tmp and /dev/shm that are the sandbox's own (never the host's).
    own_scratch: frozenset[str] = frozenset()
    # What sandboxed code sees when it lists /run/sandbox: at most the socket, never the token file.
    run_dir_views: tuple[str, ...] = ("['executor.sock']",)
    # Whether the sandbox is reached only through an API (no host path of it exists on this machine).
    remote = False
    # Interfaces the sandbox may see besides lo, provided they are down (a pod's CNI interface).
    downed_interfaces: frozenset[str] = frozenset()
    # What a write past the disk limit says: the workspace's own file system is full; where the limit is
    # enforced only by eviction, a single file meets RLIMIT_FSIZE first (Python's EFBIG, or bash reporting
    # its child killed by SIGXFSZ).
    disk_full_messages: tuple[str, ...] = ("No space left on device",)
    # Whether many files past the disk limit end the whole sandbox (kubelet eviction) instead of a write.
    disk_total_by_eviction = False

    def __init__(self) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="sbc-", dir="/tmp")  # short: socket paths stay < 108 bytes
        self.runtime = self.build()
        self.made: list[tuple[Runtime, SandboxHandle]] = []

    # -- building --

    def build(self, data_dir: str | None = None, **config: Any) -> Runtime:
        """A runtime of this backend on `data_dir` (this backend's own by default), as a restart would."""
        raise NotImplementedError

    def image(self, image: str) -> str:
        """The image name a template of kind `image` ("python" or "node") has on this backend."""
        return image

    def spec(
        self,
        *,
        image: str = "python",
        env: dict[str, str] | None = None,
        session_id: str | None = None,
        **resources: Any,
    ) -> SandboxSpec:
        return SandboxSpec(
            session_id=f"c{uuid.uuid4().hex[:12]}" if session_id is None else session_id,
            image=self.image(image),
            token=secrets.token_urlsafe(24),
            resources=Resources(**resources),
            env=env or {},
            labels={"sandbox.test": "contract"},
        )

    def make(self, *, runtime: Runtime | None = None, **spec: Any) -> SandboxHandle:
        """Create a sandbox, destroyed after the test; keyword arguments go to `spec`."""
        runtime = runtime or self.runtime
        handle = runtime.create(self.spec(**spec))
        self.made.append((runtime, handle))
        return handle

    def destroy_made(self) -> None:
        made, self.made = self.made, []
        destroy_all(list(reversed(made)))

    def close(self) -> None:
        self.destroy_made()
        for handle in self.runtime.list_managed():
            self.runtime.destroy(handle)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- what the host sees --

    def node_names(self) -> set[str]:
        """The names a handle's `node` may have: this host's for a local backend."""
        return {socket.gethostname()}

    def endpoint_exists(self, handle: SandboxHandle) -> bool:
        """Whether the handle's endpoint names a live listener place (the socket file, the pod)."""
        return os.path.exists(handle.endpoint)

    def connect_raw(self, handle: SandboxHandle) -> socket.socket:
        """A connection to the executor with no client in between (for requests the client would not send)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(handle.endpoint)
        return sock

    def workspace(self, runtime: Runtime, handle: SandboxHandle) -> str:
        """The sandbox's workspace as a host directory (local backends only)."""
        raise NotImplementedError

    def host_workspace(self, runtime: Runtime, handle: SandboxHandle) -> str | None:
        """The workspace's host path, which other sandboxes must not find; None when it has none here."""
        return None if self.remote else self.workspace(runtime, handle)

    def read_workspace_file(self, runtime: Runtime, handle: SandboxHandle, path: str) -> bytes | None:
        """A workspace file as the control plane reads it (not through the executor), None when missing."""
        try:
            with open(os.path.join(self.workspace(runtime, handle), path), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def run_dir(self, handle: SandboxHandle) -> str:
        """The host directory mounted at /run/sandbox (the executor's socket)."""
        raise NotImplementedError

    def run_dir_entries(self, handle: SandboxHandle) -> list[str] | None:
        """What is in the control plane's run dir next to the executor's socket; None for a remote backend,
        whose control plane keeps nothing in the sandbox."""
        return sorted(os.listdir(self.run_dir(handle)))

    def packages_entries(self, handle: SandboxHandle) -> list[str]:
        """What the sandbox's package tree (mounted read-only at /opt/packages) holds."""
        return sorted(os.listdir(self.packages_dir(handle)))

    def packages_dir(self, handle: SandboxHandle) -> str:
        return self.runtime.packages_dir(handle.session_id)  # type: ignore[attr-defined]

    def sandbox_uid(self, handle: SandboxHandle) -> int:
        """The uid (and gid) sandboxed code runs as."""
        return 1000

    def private_paths(self, handle: SandboxHandle) -> list[str]:
        """Host files and directories of this sandbox that only the control plane may read."""
        raise NotImplementedError

    def host_record(self, handle: SandboxHandle) -> str:
        """Everything the host keeps about the sandbox outside it (records, engine metadata), as text."""
        raise NotImplementedError

    def processes(self, handle: SandboxHandle) -> list[str]:
        """The sandbox's processes as the host sees them, sorted (pids or command lines)."""
        raise NotImplementedError

    def pids_limit_hits(self, handle: SandboxHandle) -> int | None:
        """How often the pids cgroup refused a fork, when the host can tell and it is the binding limit."""
        return None

    def peak_memory_bytes(self, handle: SandboxHandle) -> int | None:
        """The most memory the sandbox ever held, when its memory cgroup keeps that count."""
        return None

    def kill(self, handle: SandboxHandle) -> None:
        """The sandbox dies under the control plane (OOM of its supervisor, `docker kill`)."""
        raise NotImplementedError

    def footprint(self, runtime: Runtime, handle: SandboxHandle) -> dict[str, Any]:
        """What a live sandbox occupies on the host, noted so `remains` can look for it after a destroy."""
        raise NotImplementedError

    def remains(self, footprint: dict[str, Any]) -> list[str]:
        """What is still on the host of a destroyed sandbox: [] when nothing is."""
        raise NotImplementedError

    def remains_of(self, runtime: Runtime, session_id: str) -> list[str]:
        """What is on the host of a session whose create failed: [] when nothing is."""
        raise NotImplementedError

    def disk_limit_problem(self) -> str | None:
        """Why this host cannot hold a sandbox to a total disk limit, or None when it can."""
        return None


class ProcessBackend(Backend):
    name = "process"
    init_command = "bwrap"
    # bubblewrap's --dev is a tmpfs of the sandbox's own (charged to its memory cgroup), not the host's /dev.
    own_scratch = frozenset({"/dev"})
    # Once the executor listens the run dir is the control plane's: when it is root, not even listable.
    run_dir_views = ("['executor.sock']", "PermissionError")

    @staticmethod
    def missing() -> str | None:
        if shutil.which("bwrap") is None:
            return "bubblewrap (bwrap) is not installed; `make system-deps` installs it"
        return None

    def build(self, data_dir: str | None = None, **config: Any) -> Runtime:
        from runtime.process import ProcessRuntime

        return ProcessRuntime(data_dir=data_dir or self.data_dir, **config)

    def _record(self, runtime: Runtime, handle: SandboxHandle) -> dict[str, Any]:
        from runtime.process.record import read_record

        record = read_record(runtime.session_dir(handle.sandbox_id))  # type: ignore[attr-defined]
        assert record is not None, handle
        return record

    def workspace(self, runtime: Runtime, handle: SandboxHandle) -> str:
        return runtime.workspace_dir(handle.sandbox_id)  # type: ignore[attr-defined]

    def run_dir(self, handle: SandboxHandle) -> str:
        return os.path.dirname(handle.endpoint)

    def private_paths(self, handle: SandboxHandle) -> list[str]:
        root = self.runtime.session_dir(handle.sandbox_id)  # type: ignore[attr-defined]
        return [root, os.path.join(root, "sandbox.json"), os.path.join(root, "executor.log")]

    def host_record(self, handle: SandboxHandle) -> str:
        return json.dumps(self._record(self.runtime, handle))

    def _cgroup_file(self, handle: SandboxHandle, controller: str, name: str) -> str | None:
        paths = (self._record(self.runtime, handle).get("cgroup") or {}).get("paths", {})
        directory = paths.get(controller) or paths.get("unified")
        if not directory or not os.path.exists(os.path.join(directory, name)):
            return None
        with open(os.path.join(directory, name)) as fh:
            return fh.read()

    def processes(self, handle: SandboxHandle) -> list[str]:
        # The sandbox's cgroup holds all of it; without cgroups, its processes name its directory.
        procs = self._cgroup_file(handle, "pids", "cgroup.procs")
        if procs is None:
            pids = host_processes_mentioning(self.runtime.session_dir(handle.sandbox_id))  # type: ignore[attr-defined]
            return sorted(str(pid) for pid in pids)
        return sorted(procs.split())

    def pids_limit_hits(self, handle: SandboxHandle) -> int | None:
        events = self._cgroup_file(handle, "pids", "pids.events")
        # A session with a host uid of its own meets RLIMIT_NPROC (max_processes) before pids.max: then
        # the cgroup's count says nothing.
        if events is None or self._record(self.runtime, handle)["uid"] != 0:
            return None
        return int(events.split()[-1])

    def peak_memory_bytes(self, handle: SandboxHandle) -> int | None:
        for name in ("memory.max_usage_in_bytes", "memory.peak"):  # cgroup v1, v2
            peak = self._cgroup_file(handle, "memory", name)
            if peak is not None:
                return int(peak)
        return None

    def kill(self, handle: SandboxHandle) -> None:
        record = self._record(self.runtime, handle)
        os.killpg(record["pgid"], signal.SIGKILL)
        child = self.runtime._children.get(handle.sandbox_id)  # type: ignore[attr-defined]
        if child is not None:
            child.wait(10)

    def footprint(self, runtime: Runtime, handle: SandboxHandle) -> dict[str, Any]:
        record = self._record(runtime, handle)
        return {
            "root": runtime.session_dir(handle.sandbox_id),  # type: ignore[attr-defined]
            "pid": record["pid"],
            "start_time": record["start_time"],
            "cgroups": list((record.get("cgroup") or {}).get("paths", {}).values()),
            "stage": record.get("stage"),
        }

    def remains(self, footprint: dict[str, Any]) -> list[str]:
        from runtime.process.record import alive

        found = []
        if os.path.exists(footprint["root"]):
            found.append(f"directory {footprint['root']}")
        if alive(footprint["pid"], footprint["start_time"]):
            found.append(f"supervisor pid {footprint['pid']}")
        found += [f"process {pid}" for pid in host_processes_mentioning(footprint["root"])]
        found += [f"cgroup {path}" for path in footprint["cgroups"] if os.path.exists(path)]
        if footprint["stage"] and os.path.exists(footprint["stage"]):
            found.append(f"stage {footprint['stage']}")
        return found

    def remains_of(self, runtime: Runtime, session_id: str) -> list[str]:
        root = runtime.session_dir(session_id)  # type: ignore[attr-defined]
        found = [f"directory {root}"] if os.path.exists(root) else []
        found += [f"process {pid}" for pid in host_processes_mentioning(root)]
        cgroups = runtime.cgroups  # type: ignore[attr-defined]
        if cgroups is not None and cgroups.available:
            bases = [base for base in cgroups.bases.values() if os.path.isdir(base)]  # pruned when empty
            found += [
                f"cgroup {name}"
                for base in bases
                for name in os.listdir(base)
                if name.endswith("-" + session_id)
            ]
        found += [f"listed {h.session_id}" for h in runtime.list_managed() if h.session_id == session_id]
        return found

    def disk_limit_problem(self) -> str | None:
        reason = self.runtime.disk_limit_reason  # type: ignore[attr-defined]
        if reason:
            return f"no loop-mounted workspace here: {reason}"
        if os.geteuid() != 0:
            return "a total disk limit needs a root control plane (loop-mounted workspaces)"
        return None


class DockerBackend(Backend):
    name = "docker"
    init_command = "tini"

    @staticmethod
    def missing() -> str | None:
        from runtime.tests.test_docker_support import PYTHON_IMAGE, require

        require(PYTHON_IMAGE)  # skips, or fails under SANDBOX_REQUIRE_DOCKER, naming what is missing
        return None

    def build(self, data_dir: str | None = None, **config: Any) -> Runtime:
        from runtime.docker import DockerRuntime

        return DockerRuntime(data_dir=data_dir or self.data_dir, **config)

    def image(self, image: str) -> str:
        from runtime.tests.test_docker_support import NODE_IMAGE, PYTHON_IMAGE, require

        if image == "node":
            require(NODE_IMAGE)
            return NODE_IMAGE
        return PYTHON_IMAGE if image == "python" else image

    def workspace(self, runtime: Runtime, handle: SandboxHandle) -> str:
        return handle.workspace_path or runtime.dirs(handle.session_id).workspace  # type: ignore[attr-defined]

    def run_dir(self, handle: SandboxHandle) -> str:
        return self.runtime.dirs(handle.session_id).run  # type: ignore[attr-defined]

    def private_paths(self, handle: SandboxHandle) -> list[str]:
        dirs = self.runtime.dirs(handle.session_id)  # type: ignore[attr-defined]
        return [dirs.root, dirs.image]

    def host_record(self, handle: SandboxHandle) -> str:
        from runtime.tests.test_docker_support import engine

        return json.dumps(engine().api.inspect_container(handle.sandbox_id))

    def processes(self, handle: SandboxHandle) -> list[str]:
        from runtime.tests.test_docker_support import engine

        top = engine().api.top(handle.sandbox_id, ps_args="-o pid,args")
        return sorted(row[-1] for row in top["Processes"])

    def pids_limit_hits(self, handle: SandboxHandle) -> int | None:
        from runtime.tests.test_docker_support import engine

        container = engine().containers.get(handle.sandbox_id)
        events = container.exec_run(["cat", "/sys/fs/cgroup/pids/pids.events"]).output.decode()
        return int(events.split()[-1]) if events.startswith("max") else None

    def peak_memory_bytes(self, handle: SandboxHandle) -> int | None:
        from runtime.tests.test_docker_support import engine

        container = engine().containers.get(handle.sandbox_id)
        for path in ("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak"):
            result = container.exec_run(["cat", path])
            if result.exit_code == 0:
                return int(result.output)
        return None

    def kill(self, handle: SandboxHandle) -> None:
        from runtime.tests.test_docker_support import engine

        engine().containers.get(handle.sandbox_id).kill()

    def footprint(self, runtime: Runtime, handle: SandboxHandle) -> dict[str, Any]:
        dirs = runtime.dirs(handle.session_id)  # type: ignore[attr-defined]
        return {"container": handle.sandbox_id, "root": dirs.root, "image": dirs.image}

    def remains(self, footprint: dict[str, Any]) -> list[str]:
        import docker.errors

        from runtime.loop_workspace import loop_device
        from runtime.tests.test_docker_support import engine

        found = []
        try:
            engine().containers.get(footprint["container"])
            found.append(f"container {footprint['container']}")
        except docker.errors.NotFound:
            pass
        if os.path.exists(footprint["root"]):
            found.append(f"directory {footprint['root']}")
        with open("/proc/self/mounts") as fh:
            if footprint["root"] in fh.read():
                found.append(f"mount below {footprint['root']}")
        if loop_device(footprint["image"]) is not None:
            found.append(f"loop device of {footprint['image']}")
        return found

    def remains_of(self, runtime: Runtime, session_id: str) -> list[str]:
        import docker.errors

        from runtime.tests.test_docker_support import engine

        root = runtime.dirs(session_id).root  # type: ignore[attr-defined]
        found = [f"directory {root}"] if os.path.exists(root) else []
        try:
            engine().containers.get(runtime.container_name(session_id))  # type: ignore[attr-defined]
            found.append(f"container {runtime.container_name(session_id)}")  # type: ignore[attr-defined]
        except docker.errors.NotFound:
            pass
        found += [f"listed {h.session_id}" for h in runtime.list_managed() if h.session_id == session_id]
        return found

    def disk_limit_problem(self) -> str | None:
        if self.runtime._workspace_kind() != "loop":  # type: ignore[attr-defined]
            return "no loop-mounted workspace here (the tmpfs workspace is bounded by memory, not disk)"
        return None


BACKENDS: dict[str, type[Backend]] = {"process": ProcessBackend, "docker": DockerBackend}


def open_backend(name: str) -> Backend:
    """The backend `name`, or a skip naming what this machine lacks for it."""
    kind = BACKENDS[name]
    problem = kind.missing()  # type: ignore[attr-defined]
    if problem and name == "kubernetes":
        # Collected only when asked for (SANDBOX_K8S_TESTS=1): a cluster asked for and not there is a failure.
        pytest.fail(f"SANDBOX_K8S_TESTS=1 but {problem}")
    if problem:
        pytest.skip(problem)
    return kind()


class KubernetesBackend(Backend):
    """Pods on the cluster KUBECONFIG names (the test cluster: /work/shared/k8s), collected only with
    SANDBOX_K8S_TESTS=1. The host sees the sandbox only through the API server (exec, object reads)."""

    name = "kubernetes"
    init_command = "tini"
    # The image's /run/sandbox stays empty: the executor listens on the pod's loopback (port-forward).
    run_dir_views = ("[]", "FileNotFoundError")
    remote = True
    # The CNI's interface stays, taken down by the pod's network container before the sandbox is handed out.
    downed_interfaces = frozenset({"eth0"})
    disk_full_messages = ("File too large", "File size limit exceeded")
    disk_total_by_eviction = True
    PYTHON_IMAGE = os.environ.get("SANDBOX_K8S_PYTHON_IMAGE", "sandbox-template-python-basic:latest")
    NODE_IMAGE = os.environ.get("SANDBOX_K8S_NODE_IMAGE", "sandbox-template-nodejs-basic:latest")

    @staticmethod
    def missing() -> str | None:
        from runtime.base import RuntimeFailure
        from runtime.kubernetes import KubernetesRuntime

        try:
            KubernetesRuntime().check()
        except RuntimeFailure as exc:
            return f"no usable Kubernetes cluster (KUBECONFIG): {exc.message}"
        return None

    def build(self, data_dir: str | None = None, **config: Any) -> Runtime:
        from runtime.kubernetes import KubernetesRuntime

        config.setdefault("image_pull_policy", os.environ.get("SANDBOX_K8S_IMAGE_PULL_POLICY", "Never"))
        config.setdefault("namespace", os.environ.get("SANDBOX_K8S_NAMESPACE", "default"))
        # The data dir's name scopes list_managed, as a data dir does for the other backends.
        return KubernetesRuntime(instance=os.path.basename(data_dir or self.data_dir), **config)

    def image(self, image: str) -> str:
        return {"python": self.PYTHON_IMAGE, "node": self.NODE_IMAGE}.get(image, image)

    def _exec(self, handle: SandboxHandle, code: str) -> str:
        """Run Python in the sandbox's container through the API server (as the sandbox's own uid)."""
        from kubernetes.stream import stream

        from runtime.kubernetes.transport import STREAM_LOCK

        core = self.runtime.stream_core()  # type: ignore[attr-defined]
        with STREAM_LOCK:
            return str(
                stream(
                    core.connect_get_namespaced_pod_exec,
                    handle.sandbox_id,
                    self.runtime.namespace,  # type: ignore[attr-defined]
                    container="sandbox",
                    command=["python3", "-c", code],
                    stderr=True,
                    stdin=False,
                    stdout=True,
                    tty=False,
                )
            )

    def _pod(self, handle: SandboxHandle) -> Any:
        return self.runtime.core().read_namespaced_pod(handle.sandbox_id, self.runtime.namespace)  # type: ignore[attr-defined]

    def node_names(self) -> set[str]:
        return {node.metadata.name for node in self.runtime.core().list_node().items}  # type: ignore[attr-defined]

    def endpoint_exists(self, handle: SandboxHandle) -> bool:
        from kubernetes.client.exceptions import ApiException

        from runtime.kubernetes import spec as ks

        namespace = self.runtime.namespace  # type: ignore[attr-defined]
        if handle.endpoint != f"k8s://{namespace}/{handle.sandbox_id}:{ks.EXECUTOR_PORT}":
            return False
        try:
            self._pod(handle)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def connect_raw(self, handle: SandboxHandle) -> socket.socket:
        from runtime.kubernetes import spec as ks
        from runtime.kubernetes import transport

        core = self.runtime.stream_core()  # type: ignore[attr-defined]
        namespace = self.runtime.namespace  # type: ignore[attr-defined]
        return transport.connector(core, namespace, handle.sandbox_id, ks.EXECUTOR_PORT)(5.0)

    def read_workspace_file(self, runtime: Runtime, handle: SandboxHandle, path: str) -> bytes | None:
        out = self._exec(
            handle,
            "import base64, os\n"
            f"path = os.path.join('/workspace', {path!r})\n"
            "print('FILE', base64.b64encode(open(path, 'rb').read()).decode() if os.path.exists(path) else '-')\n",
        )
        encoded = next(line for line in out.splitlines() if line.startswith("FILE ")).removeprefix("FILE ")
        return None if encoded == "-" else base64.b64decode(encoded)

    def run_dir_entries(self, handle: SandboxHandle) -> list[str] | None:
        return None

    def packages_entries(self, handle: SandboxHandle) -> list[str]:
        out = self._exec(handle, "import json, os\nprint(json.dumps(sorted(os.listdir('/opt/packages'))))")
        return json.loads(out.strip().splitlines()[-1])

    def sandbox_uid(self, handle: SandboxHandle) -> int:
        """The uid the control plane gave the pod (each pod its own: runtime/kubernetes/spec.py)."""
        return int(self._pod(handle).spec.security_context.run_as_user)

    def private_paths(self, handle: SandboxHandle) -> list[str]:
        return []  # nothing of a pod's is on the control plane's host

    def host_record(self, handle: SandboxHandle) -> str:
        core = self.runtime.core()  # type: ignore[attr-defined]
        namespace = self.runtime.namespace  # type: ignore[attr-defined]
        pod = core.read_namespaced_pod(handle.sandbox_id, namespace)
        record = [core.api_client.sanitize_for_serialization(pod)]
        secrets_of_pod = core.list_namespaced_secret(namespace, label_selector="sandbox.managed=true")
        record += [
            core.api_client.sanitize_for_serialization(secret)
            for secret in secrets_of_pod.items
            if (secret.metadata.annotations or {}).get("sandbox.session-id") == handle.session_id
        ]
        return json.dumps(record)

    def processes(self, handle: SandboxHandle) -> list[str]:
        out = self._exec(
            handle,
            "import os\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit() and int(p) != os.getpid():\n"
            "        try: print(p, open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0', b' ').decode())\n"
            "        except OSError: pass\n",
        )
        return sorted(line for line in out.splitlines() if line.strip())

    def _cgroup_file(self, handle: SandboxHandle, *paths: str) -> str | None:
        code = (
            f"import os\nfor p in {list(paths)!r}:\n    if os.path.exists(p): print(open(p).read()); break\n"
        )
        out = self._exec(handle, code).strip()
        return out or None

    def pids_limit_hits(self, handle: SandboxHandle) -> int | None:
        # Without the kubelet's podPidsLimit the pod's pids cgroup has no limit: RLIMIT_NPROC of the pod's
        # own uid (max_processes) is what binds, and the cgroup's count says nothing.
        limit = self._cgroup_file(handle, "/sys/fs/cgroup/pids/pids.max")
        if not limit or not limit.isdigit():
            return None
        events = self._cgroup_file(handle, "/sys/fs/cgroup/pids/pids.events")
        return int(events.split()[-1]) if events and events.startswith("max") else None

    def peak_memory_bytes(self, handle: SandboxHandle) -> int | None:
        peak = self._cgroup_file(
            handle, "/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak"
        )
        return int(peak) if peak and peak.isdigit() else None

    def kill(self, handle: SandboxHandle) -> None:
        # Every process but tini (pid 1, which then exits with its child): the container ends under us.
        self._exec(
            handle,
            "import os, signal\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit() and int(p) not in (1, os.getpid()):\n"
            "        try: os.kill(int(p), signal.SIGKILL)\n"
            "        except OSError: pass\n",
        )

    def _objects(self, runtime: Runtime, session_id: str) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        from runtime.kubernetes import spec as ks

        core = runtime.core()  # type: ignore[attr-defined]
        namespace = runtime.namespace  # type: ignore[attr-defined]
        found = []
        for read, name, kind in (
            (core.read_namespaced_pod, ks.pod_name(session_id), "pod"),  # the only object a sandbox has
        ):
            try:
                read(name, namespace)
                found.append(f"{kind} {name}")
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return found

    def footprint(self, runtime: Runtime, handle: SandboxHandle) -> dict[str, Any]:
        return {"runtime": runtime, "session_id": handle.session_id}

    def remains(self, footprint: dict[str, Any]) -> list[str]:
        return self._objects(footprint["runtime"], footprint["session_id"])

    def remains_of(self, runtime: Runtime, session_id: str) -> list[str]:
        found = self._objects(runtime, session_id)
        found += [f"listed {h.session_id}" for h in runtime.list_managed() if h.session_id == session_id]
        return found

    def disk_limit_problem(self) -> str | None:
        return None  # enforced by eviction (disk_total_by_eviction) and RLIMIT_FSIZE per file


BACKENDS["kubernetes"] = KubernetesBackend
