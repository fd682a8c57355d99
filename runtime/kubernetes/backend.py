"""The kubernetes backend: one hardened pod per session; its executor is reached through the API server.

The pod (spec.py) runs the template image as a non-root uid of its session's own with a read-only root, no
capabilities, RuntimeDefault seccomp, no service-account token and no service links; a network container
takes every network interface but lo down (create waits until the executor sees that); the workspace, /tmp
and /dev/shm are size-limited emptyDirs. The executor listens on the pod's loopback and is reached by a
port-forward stream (transport.py), so the control plane works from inside or outside the cluster with only
API access.

The cluster is the record: labels name the session and this control plane's instance, so a restarted
control plane finds everything with one label query. The pod is given only the SHA-256 of its token (the
executor's --token-sha256): no Secret carries it. The first create ensures a deny-all NetworkPolicy for
sandbox pods (spec.py; enforced where the CNI supports it).

A cold create is: one pod create (a name conflict, rare, clears a dead pod of the session and creates again),
then /health through a port-forward until the executor answers, tried from the start rather than after the
pod's status says Running (the kubelet reports that up to a second late), with the pod read twice a second
to fail fast on one that cannot start. Pods prefer nodes whose image list holds their image (a
node list cached for NODE_CACHE_SECONDS and refreshed in the background, so no create waits on it).
Executor calls share a ConnectionPool per pod (runtime/client.py): one port-forward carries many requests.
Measured figures are in docs/architecture.md.

The API client is made on first use: importing or constructing this backend never needs a cluster.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

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
from runtime.client import ConnectionPool, ExecutorClient
from runtime.environment import check_env
from runtime.kubernetes import spec as ks
from runtime.kubernetes import transport

logger = logging.getLogger(__name__)

DEFAULT_IMAGE = "sandbox-template-python-basic:latest"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# Waiting reasons that will not resolve by waiting longer.
STUCK_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
# How long the list of nodes and the images they hold is trusted before a background refresh.
NODE_CACHE_SECONDS = 30.0
# Waiting for a new pod's executor: /health every FAST_PAUSE for the first FAST_SECONDS (or while the
# container runs), then backing off to SLOW_PAUSE; the pod's status read every STATUS_EVERY.
FAST_PAUSE, FAST_SECONDS, SLOW_PAUSE, STATUS_EVERY = 0.01, 3.0, 0.25, 0.5
# Idle port-forward connections are closed after this long (each holds a stream through the API server).
IDLE_CONNECTION_SECONDS = 30.0


def api_failure(exc: BaseException, what: str) -> RuntimeFailure:
    """A clear RuntimeFailure for an API error: unreachable server, RBAC refusal, missing namespace."""
    if isinstance(exc, RuntimeFailure):
        return exc
    if isinstance(exc, ApiException):
        reason = exc.reason or ""
        try:
            reason = json.loads(exc.body or "{}").get("message") or reason
        except (ValueError, AttributeError):
            pass
        if exc.status in (401, 403):
            return RuntimeFailure(
                f"{what}: the Kubernetes API refused ({exc.status}): {reason}; check the Role in "
                "deploy/kubernetes/rbac.yaml",
                permanent=True,
            )
        if exc.status == 404 and "namespaces" in reason:
            return RuntimeFailure(f"{what}: {reason} (SANDBOX_K8S_NAMESPACE)", permanent=True)
        return RuntimeFailure(
            f"{what}: the Kubernetes API answered {exc.status}: {reason}",
            permanent=exc.status in (400, 404, 409, 422),
        )
    return RuntimeFailure(f"{what}: the Kubernetes API server is unreachable: {type(exc).__name__}: {exc}")


def usage_from_summary(
    summary: dict[str, Any], namespace: str, pod: str, uid: str | None = None
) -> tuple[float | None, float | None]:
    """(cpu_percent, memory_mb) of the sandbox container of `pod` in a kubelet stats/summary document."""
    for entry in summary.get("pods") or []:
        ref = entry.get("podRef") or {}
        if ref.get("namespace") != namespace or ref.get("name") != pod:
            continue
        if uid and ref.get("uid") and ref.get("uid") != uid:
            continue
        for container in entry.get("containers") or []:
            if container.get("name") != ks.CONTAINER:
                continue
            cores = (container.get("cpu") or {}).get("usageNanoCores")
            working_set = (container.get("memory") or {}).get("workingSetBytes")
            cpu = round(cores / 1e7, 2) if isinstance(cores, int | float) else None
            memory = round(working_set / 2**20, 2) if isinstance(working_set, int | float) else None
            return cpu, memory
    return None, None


def pod_resources(pod: Any) -> Resources | None:
    """The resources a sandbox pod was made with (its container's limits, disk annotation and nproc limit),
    or None when the pod is not one of ours."""
    from kubernetes.utils import parse_quantity

    container = next((c for c in pod.spec.containers or [] if c.name == ks.CONTAINER), None)
    disk = (pod.metadata.annotations or {}).get(ks.ANNOTATION_DISK_MB, "")
    args = list(container.args or []) if container is not None else []
    nproc = [arg.partition("=")[2] for arg in args if arg.startswith("nproc=")]
    limits = (container.resources.limits or {}) if container is not None and container.resources else {}
    if not (disk.isdigit() and nproc and nproc[-1].isdigit() and "cpu" in limits and "memory" in limits):
        return None
    return Resources(
        cpu=int(parse_quantity(limits["cpu"]) * 1000) / 1000,
        memory_mb=int(parse_quantity(limits["memory"]) / 2**20),
        disk_mb=int(disk),
        max_processes=int(nproc[-1]),
    )


class KubernetesRuntime(Runtime):
    """Sessions as hardened pods from template images, in one namespace of one cluster.

    `instance` scopes what `list_managed` returns (and state sync removes) to this control plane's pods, so
    two control planes, or a test run next to a dev server, sharing a namespace leave each other alone.
    """

    name = "kubernetes"
    resizes_live = False  # a pod's resources are fixed once it runs

    def __init__(
        self,
        *,
        namespace: str = "default",
        kubeconfig: str | None = None,
        context: str | None = None,
        instance: str = "default",
        default_image: str = DEFAULT_IMAGE,
        image_pull_policy: str = "IfNotPresent",
        runtime_class: str = "",
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
        sandbox_uid: int | None = None,
        isolate_network: bool = True,
        tmp_mb: int | None = None,
        startup_timeout: float = 60.0,
        max_output: int | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
    ) -> None:
        if image_pull_policy not in PULL_POLICIES:
            raise RuntimeFailure(
                f"SANDBOX_K8S_IMAGE_PULL_POLICY must be one of {', '.join(PULL_POLICIES)}, "
                f"not {image_pull_policy!r}",
                permanent=True,
            )
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self.instance = instance
        self.default_image = default_image
        self.image_pull_policy = image_pull_policy
        self.runtime_class = runtime_class
        self.node_selector = dict(node_selector or {})
        self.tolerations = list(tolerations or [])
        # None: each pod a uid of its own (spec.sandbox_uid); a fixed uid shares RLIMIT_NPROC across pods.
        self.uid = None if sandbox_uid is None else int(sandbox_uid)
        self.isolate_network = bool(isolate_network)
        self.tmp_mb = tmp_mb
        self.startup_timeout = startup_timeout
        self.max_output = max_output
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._core: Any = None
        self._stream_core: Any = None
        self._policy_ensured = False
        self._lock = threading.Lock()
        self._pools: dict[str, ConnectionPool] = {}
        self._last_sweep = time.monotonic()
        self._nodes: dict[str, set[str]] | None = None  # node name -> the image names it holds
        self._nodes_at = 0.0
        self._nodes_refreshing = False

    @classmethod
    def config_from_settings(cls, settings: Any) -> dict[str, Any]:
        """SANDBOX_K8S_*: namespace, image pull policy, runtime class, node selector (a dict, or JSON, or
        "k=v,k=v"), tolerations (a list, or JSON), instance label, pod start timeout; the kubeconfig by the
        standard lookup."""
        config: dict[str, Any] = {
            "namespace": getattr(settings, "SANDBOX_K8S_NAMESPACE", "") or "default",
            "image_pull_policy": getattr(settings, "SANDBOX_K8S_IMAGE_PULL_POLICY", "") or "IfNotPresent",
            "runtime_class": getattr(settings, "SANDBOX_K8S_RUNTIME_CLASS", "") or "",
            "node_selector": _mapping(getattr(settings, "SANDBOX_K8S_NODE_SELECTOR", None)),
            "tolerations": _list(getattr(settings, "SANDBOX_K8S_TOLERATIONS", None)),
            "instance": getattr(settings, "SANDBOX_K8S_INSTANCE", "") or "default",
        }
        isolate = getattr(settings, "SANDBOX_K8S_ISOLATE_NETWORK", None)
        if isolate is not None:
            config["isolate_network"] = _flag(isolate)
        timeout = getattr(settings, "SANDBOX_K8S_POD_START_TIMEOUT", None)
        if timeout:
            config["startup_timeout"] = float(timeout)
        return config

    # -- API --

    def core(self) -> Any:
        """The CoreV1 API, made on first use: in-cluster config, else the kubeconfig (KUBECONFIG, ~/.kube)."""
        with self._lock:
            if self._core is None:
                self._core = self._new_core()
            return self._core

    def stream_core(self) -> Any:
        """A CoreV1 API on an ApiClient of its own, for exec and port-forward streams (transport.py)."""
        with self._lock:
            if self._stream_core is None:
                self._stream_core = self._new_core()
            return self._stream_core

    def _new_core(self) -> Any:
        try:
            api_client = _api_client(self.kubeconfig, self.context)
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            raise RuntimeFailure(
                f"no Kubernetes configuration: neither in-cluster nor a kubeconfig ({exc})", permanent=True
            ) from exc
        return k8s.CoreV1Api(api_client)

    def check(self) -> None:
        try:
            self.core().list_namespaced_pod(self.namespace, limit=1, _request_timeout=10)
        except Exception as exc:
            raise api_failure(exc, f"cannot list pods in namespace {self.namespace}") from exc

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        if not SESSION_ID.match(spec.session_id or ""):
            raise RuntimeFailure(
                f"invalid session id for the kubernetes runtime: {spec.session_id!r}", permanent=True
            )
        try:
            env = check_env(spec.env)
        except ValueError as exc:
            raise RuntimeFailure(str(exc), permanent=True) from exc
        image = spec.image or self.default_image
        name = ks.pod_name(spec.session_id)
        uid = ks.sandbox_uid(spec.session_id) if self.uid is None else self.uid
        manifest = ks.pod_manifest(
            spec,
            image=image,
            env=env,
            instance=self.instance,
            uid=uid,
            gid=uid,
            image_pull_policy=self.image_pull_policy,
            runtime_class=self.runtime_class,
            node_selector=self.node_selector,
            tolerations=self.tolerations,
            isolate_network=self.isolate_network,
            tmp_mb=self.tmp_mb,
            max_output=self.max_output,
            preferred_nodes=self._nodes_with(image),
        )
        handle = SandboxHandle(
            backend=self.name,
            sandbox_id=name,
            session_id=spec.session_id,
            endpoint=f"k8s://{self.namespace}/{name}:{ks.EXECUTOR_PORT}",
            token=spec.token,
        )
        self._ensure_network_policy()
        self._drop_pool(name)
        pod = self._create_pod(spec.session_id, name, manifest)
        try:
            node = self._wait_healthy(handle, pod)
        except BaseException as exc:
            try:
                self._delete(spec.session_id, name)
            except Exception:
                logger.exception("cleanup after the failed create of sandbox %s", spec.session_id)
            if not isinstance(exc, Exception):
                raise
            raise api_failure(exc, f"cannot create sandbox {spec.session_id}") from exc
        return SandboxHandle(
            backend=handle.backend,
            sandbox_id=name,
            session_id=spec.session_id,
            endpoint=handle.endpoint,
            token=spec.token,
            node=node,
        )

    def destroy(self, handle: SandboxHandle) -> None:
        name = handle.sandbox_id or ks.pod_name(handle.session_id)
        self._drop_pool(name)
        self._delete(handle.session_id, name)

    def update_resources(self, handle: SandboxHandle, resources: Resources) -> None:
        """Accept the resources the pod already runs with; refuse any other, permanently: a running pod's
        resources are fixed (Kubernetes 1.20 has no in-place resize), so the warm pool of this runtime claims
        only pods built with the session's resources (`resizes_live`)."""
        name = handle.sandbox_id or ks.pod_name(handle.session_id)
        try:
            pod = self.core().read_namespaced_pod(name, self.namespace)
        except Exception as exc:
            raise api_failure(exc, f"cannot read the resources of sandbox {handle.session_id}") from exc
        current = pod_resources(pod)

        def shown(res: Resources) -> str:
            return (
                f"cpu {float(res.cpu):g}, memory {int(res.memory_mb)} MiB, disk {int(res.disk_mb)} MiB, "
                f"{int(res.max_processes)} processes"
            )

        asked = Resources(
            cpu=int(float(resources.cpu) * 1000) / 1000,
            memory_mb=int(resources.memory_mb),
            disk_mb=int(resources.disk_mb),
            max_processes=int(resources.max_processes),
        )
        if current != asked:
            raise RuntimeFailure(
                f"sandbox {handle.session_id} runs with {shown(current) if current else 'unknown resources'}; "
                f"a running pod's resources cannot change, so it cannot take {shown(asked)}",
                permanent=True,
            )

    def inspect(self, handle: SandboxHandle) -> SandboxState:
        name = handle.sandbox_id or ks.pod_name(handle.session_id)
        try:
            pod = self.core().read_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return SandboxState(exists=False, running=False, detail="no such pod")
            raise api_failure(exc, f"cannot inspect sandbox {handle.session_id}") from exc
        except Exception as exc:
            raise api_failure(exc, f"cannot inspect sandbox {handle.session_id}") from exc
        if pod.metadata.deletion_timestamp is not None:
            return SandboxState(exists=True, running=False, detail="terminating")
        phase = pod.status.phase or "Unknown"
        running, detail = phase == "Running", phase
        starting = phase == "Pending"
        for status in pod.status.container_statuses or []:
            if status.name != ks.CONTAINER:
                continue
            state = status.state
            if state.terminated is not None:
                running, starting = False, False
                detail = f"terminated (exit code {state.terminated.exit_code}, {state.terminated.reason})"
            elif state.waiting is not None:
                running = False
                starting = starting and state.waiting.reason in ("ContainerCreating", "PodInitializing")
                detail = f"waiting ({state.waiting.reason})"
        if starting:
            # The kubelet reports a started container at its next relist, up to a second after the executor
            # answers (create returns on the answer): an executor that answers is running, even one that
            # refuses the token (list_managed's handles carry none).
            try:
                self._client(handle, 5.0, 5.0).health()
                running = True
            except RuntimeFailure as exc:
                running = exc.permanent  # an HTTP answer, not a transport failure
            if running:
                detail = "Running"
        if pod.status.reason:
            detail += f": {pod.status.reason}"
        if pod.status.message:  # why the kubelet ended it (an eviction names the volume and its limit)
            detail += f": {pod.status.message.strip()}"
        cpu, memory = self._usage(pod) if running else (None, None)
        return SandboxState(exists=True, running=running, detail=detail, cpu_percent=cpu, memory_mb=memory)

    def list_managed(self) -> list[SandboxHandle]:
        """Every pod labelled as ours and made by this instance. The token is kept nowhere the API shows to
        a list call, so these handles carry an empty one; the session row has the real one."""
        selector = ",".join(
            f"{k}={v}" for k, v in ks.managed_labels("", self.instance).items() if k != ks.LABEL_SESSION
        )
        try:
            pods = self.core().list_namespaced_pod(self.namespace, label_selector=selector)
        except Exception as exc:
            raise api_failure(exc, f"cannot list sandbox pods in namespace {self.namespace}") from exc
        handles = [
            SandboxHandle(
                backend=self.name,
                sandbox_id=pod.metadata.name,
                session_id=(pod.metadata.annotations or {}).get(ks.ANNOTATION_SESSION, ""),
                endpoint=f"k8s://{self.namespace}/{pod.metadata.name}:{ks.EXECUTOR_PORT}",
                token="",
                node=pod.spec.node_name or "",
            )
            for pod in pods.items
        ]
        return sorted(handles, key=lambda h: h.session_id)

    def install_packages(self, handle: SandboxHandle, request: PackageInstall) -> InstalledPackages:
        """Wheels downloaded and installed offline on the control plane's host (as the process backend does),
        then streamed through the API server into the pod's packages container (packages.py)."""
        from runtime.kubernetes import packages

        return packages.install(self, handle, handle.sandbox_id or ks.pod_name(handle.session_id), request)

    def executor(self, handle: SandboxHandle) -> ExecutorClient:
        return self._client(handle, self.connect_timeout, self.read_timeout)

    # -- internals --

    def _client(self, handle: SandboxHandle, connect_timeout: float, read_timeout: float) -> ExecutorClient:
        name = handle.sandbox_id or ks.pod_name(handle.session_id)
        return ExecutorClient(
            handle.endpoint or f"k8s://{self.namespace}/{name}:{ks.EXECUTOR_PORT}",
            handle.token,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            connector=transport.connector(self.stream_core(), self.namespace, name, ks.EXECUTOR_PORT),
            pool=self._pool(name),
        )

    def _pool(self, name: str) -> ConnectionPool:
        """The idle port-forward connections to pod `name`; pools left idle are swept now and then."""
        now = time.monotonic()
        pools: list[tuple[str, ConnectionPool]] = []
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = ConnectionPool(max_idle=4, max_age=IDLE_CONNECTION_SECONDS)
            if now - self._last_sweep > IDLE_CONNECTION_SECONDS / 2:
                self._last_sweep = now
                pools = [(other, p) for other, p in self._pools.items() if p is not pool]
        for other, candidate in pools:
            if candidate.sweep() == 0:
                with self._lock:
                    if self._pools.get(other) is candidate:
                        del self._pools[other]
        return pool

    def _drop_pool(self, name: str) -> None:
        with self._lock:
            pool = self._pools.pop(name, None)
        if pool is not None:
            pool.close()

    def _create_pod(self, session_id: str, name: str, manifest: dict[str, Any]) -> Any:
        """Create the pod. A name conflict means a pod of this session exists: a live one is refused, a dead
        or terminating one is removed and the create tried once more (the happy path reads nothing first)."""
        core = self.core()
        for attempt in (1, 2):
            try:
                return core.create_namespaced_pod(self.namespace, manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise api_failure(exc, f"cannot create sandbox {session_id}") from exc
                if attempt == 2:
                    raise RuntimeFailure(
                        f"a sandbox for session {session_id} exists or is being created", permanent=True
                    ) from None
            except Exception as exc:
                raise api_failure(exc, f"cannot create sandbox {session_id}") from exc
            self._clear_leftover(session_id, name)
        raise AssertionError("unreachable")

    def _wait_healthy(self, handle: SandboxHandle, pod: Any) -> str:
        """Wait until the executor answers /health; return the node. `pod` is the created pod.

        With isolate_network, the answer must also list no interface but lo as up: the network container
        (spec.network_container) starts next to the sandbox's, and the sandbox is handed out only once its
        own side confirms it is off the network.

        /health is tried through a port-forward from the start, not once the pod's status says Running:
        the kubelet reports a started container only at its next relist (up to a second later), while a
        port-forward reaches the executor the moment it listens. Attempts come every FAST_PAUSE while a
        start is expected soon (the first FAST_SECONDS, or once the container runs), then back off (an image
        being pulled). The pod is read every STATUS_EVERY seconds to fail fast on one that cannot start
        (image missing, bad spec) or that ended, and to say where it got to when the time is up.
        """
        core = self.core()
        started = time.monotonic()
        deadline = started + self.startup_timeout
        client = self._client(handle, 5.0, 5.0)
        next_read = started + STATUS_EVERY
        pause = FAST_PAUSE
        last = ""
        while True:
            try:
                health = client.health()
                up = health.get("interfaces_up") if self.isolate_network else []
                if up is None:
                    raise RuntimeFailure(
                        f"sandbox {handle.session_id}: the executor in image {pod.spec.containers[0].image} "
                        "does not report its network interfaces (rebuild the image with images/build.sh)",
                        permanent=True,
                    )
                if not up:
                    break
                last = f"network interfaces still up: {' '.join(up)}"
            except RuntimeFailure as exc:
                if exc.permanent:
                    raise
                last = exc.message
            now = time.monotonic()
            if now >= next_read or now >= deadline:
                pod = core.read_namespaced_pod(handle.sandbox_id, self.namespace)
                self._refuse_stuck(handle, pod)
                next_read = now + STATUS_EVERY
            if now >= deadline:
                why = (
                    "; ".join(
                        f"{c.type}: {c.reason}: {c.message}"
                        for c in pod.status.conditions or []
                        if c.status == "False" and c.message
                    )
                    or last
                )
                raise RuntimeFailure(
                    f"sandbox {handle.session_id}: the executor did not become healthy within "
                    f"{self.startup_timeout:g} s (the pod is {pod.status.phase}{'; ' + why if why else ''})"
                )
            soon = now - started < FAST_SECONDS or _sandbox_running(pod)
            pause = FAST_PAUSE if soon else min(max(pause, FAST_PAUSE) * 1.5, SLOW_PAUSE)
            time.sleep(min(pause, max(0.0, deadline - now)))
        if not pod.spec.node_name:
            pod = core.read_namespaced_pod(handle.sandbox_id, self.namespace)
        return pod.spec.node_name or ""

    def _refuse_stuck(self, handle: SandboxHandle, pod: Any) -> None:
        if pod.status.phase in ("Failed", "Succeeded"):
            raise RuntimeFailure(
                f"sandbox {handle.session_id}: the pod ended ({pod.status.phase}) before its executor was "
                f"ready: {pod.status.reason or ''} {pod.status.message or ''}".rstrip()
                + self._logs_tail(handle.sandbox_id)
            )
        statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
        for status in statuses:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in STUCK_REASONS:
                raise RuntimeFailure(
                    f"sandbox {handle.session_id}: container {status.name} cannot start: "
                    f"{waiting.reason}: {waiting.message or ''}".rstrip(),
                    permanent=True,
                )
            terminated = status.state.terminated if status.state else None
            if terminated is not None and terminated.exit_code != 0:
                raise RuntimeFailure(
                    f"sandbox {handle.session_id}: container {status.name} exited "
                    f"({terminated.exit_code}, {terminated.reason}) before the executor was ready"
                    + self._logs_tail(handle.sandbox_id)
                )

    def _usage(self, pod: Any) -> tuple[float | None, float | None]:
        """CPU (percent of one core) and memory (working set, MB) of the sandbox container, from the
        kubelet's summary API through the API server's node proxy (no metrics-server needed). A figure the
        kubelet has not sampled yet, or any failure to read it, stays None: usage is informative only."""
        node = pod.spec.node_name
        if not node:
            return None, None
        try:
            response = self.core().connect_get_node_proxy_with_path(
                node, "stats/summary", _preload_content=False, _request_timeout=5
            )
            summary = json.loads(response.data)
        except Exception as exc:
            logger.debug("no usage for pod %s from node %s: %s", pod.metadata.name, node, exc)
            return None, None
        return usage_from_summary(summary, self.namespace, pod.metadata.name, pod.metadata.uid)

    def _nodes_with(self, image: str) -> list[str]:
        """Nodes whose status lists `image` among the images they hold, from a short-lived cache.

        The first call of a process reads the node list (one API call); later ones use the cache and, once
        it is older than NODE_CACHE_SECONDS, refresh it in a background thread. Without permission to list
        nodes (the minimal Role has none), pods simply get no preference.
        """
        with self._lock:
            nodes, stale = self._nodes, time.monotonic() - self._nodes_at > NODE_CACHE_SECONDS
            refresh = stale and not self._nodes_refreshing
            if refresh:
                self._nodes_refreshing = True
        if refresh:
            if nodes is None:
                self._refresh_nodes()
                with self._lock:
                    nodes = self._nodes
            else:
                threading.Thread(target=self._refresh_nodes, name="k8s-node-images", daemon=True).start()
        wanted = image_names(image)
        return sorted(node for node, images in (nodes or {}).items() if images & wanted)

    def _refresh_nodes(self) -> None:
        nodes: dict[str, set[str]] = {}
        try:
            for node in self.core().list_node(_request_timeout=10).items:
                names: set[str] = set()
                for entry in node.status.images or []:
                    for image_name in entry.names or []:
                        names |= image_names(image_name)
                nodes[node.metadata.name] = names
        except Exception as exc:  # noqa: BLE001 - a preference only: never a reason to fail a create
            logger.debug("no node image list for scheduling preferences: %s", exc)
        with self._lock:
            self._nodes, self._nodes_at, self._nodes_refreshing = nodes, time.monotonic(), False

    def _ensure_network_policy(self) -> None:
        """Create the namespace's deny-all policy for sandbox pods once per process (it may exist already)."""
        if self._policy_ensured:
            return
        networking = k8s.NetworkingV1Api(self.core().api_client)
        try:
            networking.create_namespaced_network_policy(self.namespace, ks.network_policy_manifest())
        except ApiException as exc:
            if exc.status != 409:
                raise api_failure(
                    exc, f"cannot create the sandbox NetworkPolicy in {self.namespace}"
                ) from exc
        except Exception as exc:
            raise api_failure(exc, f"cannot create the sandbox NetworkPolicy in {self.namespace}") from exc
        self._policy_ensured = True

    def _logs_tail(self, name: str) -> str:
        """The last lines the sandbox's container wrote, for a failure message ("" when there are none)."""
        try:
            text = self.core().read_namespaced_pod_log(
                name, self.namespace, container=ks.CONTAINER, tail_lines=20
            )
        except Exception:  # noqa: BLE001 - the message is better without logs than not at all
            return ""
        return f"; its output ends: {str(text).strip()[-2000:]}" if text and str(text).strip() else ""

    def _clear_leftover(self, session_id: str, name: str) -> None:
        """Refuse to replace a live sandbox; remove a dead or terminating one of the same session first.

        Pod names are fixed by the session id, so a sandbox that died (or a destroy the kubelet has not
        finished) would otherwise make the next create of that session fail with a name conflict.
        """
        core = self.core()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                pod = core.read_namespaced_pod(name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise api_failure(exc, f"cannot create sandbox {session_id}") from exc
                break
            except Exception as exc:
                raise api_failure(exc, f"cannot create sandbox {session_id}") from exc
            deleting = pod.metadata.deletion_timestamp is not None
            # The sandbox's container may have ended a moment before the kubelet moves the phase on.
            ended = any(
                s.name == ks.CONTAINER and s.state is not None and s.state.terminated is not None
                for s in pod.status.container_statuses or []
            )
            if not deleting and not ended and pod.status.phase in ("Pending", "Running"):
                raise RuntimeFailure(f"a sandbox for session {session_id} is already running", permanent=True)
            if not deleting:
                self._delete(session_id, name)
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"the previous pod of session {session_id} is still being deleted")
            time.sleep(0.1)

    def _delete(self, session_id: str, name: str) -> None:
        """Delete the pod now (no grace: the sandbox holds nothing to flush). Idempotent."""
        try:
            self.core().delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise api_failure(exc, f"cannot delete sandbox {session_id}") from exc
        except Exception as exc:
            raise api_failure(exc, f"cannot delete sandbox {session_id}") from exc


def _sandbox_running(pod: Any) -> bool:
    """Whether the sandbox container has started (its executor may still be importing)."""
    for status in pod.status.container_statuses or []:
        if status.name == ks.CONTAINER and status.state is not None and status.state.running is not None:
            return True
    return False


def image_names(image: str) -> set[str]:
    """The spellings of one image reference that a node's image list may hold: "python:3" is also
    "docker.io/library/python:3", a reference without a tag also ends in ":latest"."""
    names = {image}
    last = image.rsplit("/", 1)[-1]
    if "@" not in last and ":" not in last:
        image += ":latest"
        names.add(image)
    first = image.split("/", 1)[0]
    if "/" not in image:
        names.add(f"docker.io/library/{image}")
    elif "." not in first and ":" not in first and first != "localhost":
        names.add(f"docker.io/{image}")
    if image.startswith("docker.io/library/"):
        names.add(image[len("docker.io/library/") :])
    elif image.startswith("docker.io/"):
        names.add(image[len("docker.io/") :])
    return names


def _api_client(kubeconfig: str | None, context: str | None) -> Any:
    if kubeconfig is None and context is None:
        try:
            k8s_config.load_incluster_config()
            return k8s.ApiClient()
        except ConfigException:
            pass
    return k8s_config.new_client_from_config(config_file=kubeconfig, context=context)


def _mapping(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    text = str(value).strip()
    if text.startswith("{"):
        return {str(k): str(v) for k, v in json.loads(text).items()}
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    return {k.strip(): v.strip() for k, _, v in pairs}


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _list(value: Any) -> list[dict[str, Any]]:
    if not value:
        return []
    if isinstance(value, list):
        return [dict(item) for item in value]
    return [dict(item) for item in json.loads(str(value))]
