"""What one Kubernetes sandbox is made of: its pod manifest (and the namespace's NetworkPolicy).

Kept apart from the lifecycle in backend.py so the security-relevant settings can be read (and reviewed) in
one place. Manifests are plain dicts in the core/v1 shape, which every supported cluster version accepts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.base import SandboxSpec
from runtime.kubernetes import packages
from runtime.limits import OPEN_FILES

LABEL_MANAGED, LABEL_SESSION, LABEL_INSTANCE = "sandbox.managed", "sandbox.session", "sandbox.instance"
ANNOTATION_SESSION = "sandbox.session-id"  # the exact session id (a label value is limited to 63 characters)
ANNOTATION_DISK_MB = "sandbox.disk-mb"
CONTAINER = "sandbox"
# Inside the pod; the executor base image (images/executor-base) has the same layout.
WORKSPACE, PACKAGES, EXECUTOR_HOME = "/workspace", "/opt/packages", "/opt/sandbox"
# The executor listens on the pod's loopback only: nothing on the pod network can reach it, and the control
# plane comes in through the API server's port-forward, which connects inside the pod's network namespace.
EXECUTOR_PORT = 7000
# Each pod runs as a uid (and gid) of its own, fixed by its session id, in [100000, 1000000): RLIMIT_NPROC,
# the per-execution process limit (max_processes), counts every process of a uid on the node, so one uid
# shared by all pods would let one session's fork bomb starve the others on the same node. Operators should
# also set the kubelet's podPidsLimit, which bounds a pod's processes whatever their uid.
SANDBOX_UID_BASE, SANDBOX_UID_SPAN = 100000, 900000


def sandbox_uid(session_id: str) -> int:
    """The uid and gid of the pod of `session_id` (two sessions share one with odds of 1 in 900000)."""
    digest = hashlib.sha256(b"uid\0" + session_id.encode("utf-8")).digest()
    return SANDBOX_UID_BASE + int.from_bytes(digest[:8], "big") % SANDBOX_UID_SPAN


_LABEL_VALUE = re.compile(r"\A(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?\Z")
_LABEL_KEY = re.compile(
    r"\A(?:[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?\Z"
)


def pod_name(session_id: str) -> str:
    """A DNS-1123 name fixed by the session id (session ids may hold capitals and underscores)."""
    return "sandbox-" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:20]


def label_value(value: str) -> str:
    """`value` when it is a valid label value, else a hash of it (selectors compare labels exactly)."""
    return value if _LABEL_VALUE.match(value) else "h-" + hashlib.sha256(value.encode()).hexdigest()[:40]


def managed_labels(session_id: str, instance: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_SESSION: label_value(session_id),
        LABEL_INSTANCE: label_value(instance),
    }


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a bearer token: all the pod is given (the executor's --token-sha256).

    The token is random (the control plane makes it), so its hash tells nothing about it; anyone who can
    read the pod spec, the sandboxed code included (/proc/1/cmdline), learns nothing that admits a request.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def pod_manifest(
    spec: SandboxSpec,
    *,
    image: str,
    env: Mapping[str, str],
    instance: str,
    uid: int,
    gid: int,
    image_pull_policy: str,
    runtime_class: str = "",
    node_selector: Mapping[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    isolate_network: bool = False,
    tmp_mb: int | None = None,
    max_output: int | None = None,
    preferred_nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """The pod of one sandbox: every field below is a decision of DESIGN.md §4."""
    res = spec.resources
    # /tmp and /dev/shm are memory-backed and charged to the pod: a quarter of its memory each by default.
    scratch_mb = tmp_mb or max(16, int(res.memory_mb) // 4)
    command = ["python3", "-m", "executor", "--tcp", f"127.0.0.1:{EXECUTOR_PORT}", "--workspace", WORKSPACE]
    # The executor gets only the token's hash: no Secret, volume or init container carries the token, and
    # sandboxed code (the same uid) that reads the command line learns nothing that admits a request.
    command += ["--token-sha256", token_sha256(spec.token), "--packages", PACKAGES]
    command += ["--session-id", spec.session_id, "--memory-mb", str(int(res.memory_mb))]
    command += ["--limit", f"nofile={OPEN_FILES}", "--limit", f"nproc={int(res.max_processes)}"]
    # The kubelet holds the workspace to its size only by evicting the whole pod: a single file is capped a
    # MiB under it (RLIMIT_FSIZE), so the usual runaway, one file growing without end, fails its own write
    # (EFBIG, "File too large") and the session lives on; many files together still end the pod.
    command += ["--limit", f"fsize={max(1, int(res.disk_mb) - 1) * 1024 * 1024}"]
    if max_output is not None:
        command += ["--max-output", str(int(max_output))]
    cpu = f"{int(float(res.cpu) * 1000)}m"
    memory = f"{int(res.memory_mb)}Mi"
    cpu_request = f"{max(10, int(float(res.cpu) * 250))}m"
    limits = {"cpu": cpu, "memory": memory, "ephemeral-storage": f"{int(res.disk_mb) + scratch_mb}Mi"}
    container_security = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    labels = {
        str(k): str(v)
        for k, v in spec.labels.items()
        if _LABEL_KEY.match(str(k)) and _LABEL_VALUE.match(str(v))
    }
    labels.update(managed_labels(spec.session_id, instance))
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(spec.session_id),
            "labels": labels,
            "annotations": {ANNOTATION_SESSION: spec.session_id, ANNOTATION_DISK_MB: str(int(res.disk_mb))},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostname": "sandbox",
            "terminationGracePeriodSeconds": 2,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": uid,
                "runAsGroup": gid,
                "fsGroup": gid,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image,
                    "imagePullPolicy": image_pull_policy,
                    # `args` keeps the image's entrypoint (tini, which reaps orphans and forwards SIGTERM).
                    "args": command,
                    "workingDir": EXECUTOR_HOME,
                    "env": [{"name": name, "value": value} for name, value in env.items()],
                    "securityContext": container_security,
                    # Memory and disk are requested in full (a node never promises more than it has, so
                    # the scheduler, not the kernel's OOM killer, says no); cpu is a ceiling shared with
                    # idle sandboxes, requested at a quarter so idle sessions do not fill a node.
                    "resources": {"requests": {**limits, "cpu": cpu_request}, "limits": limits},
                    "volumeMounts": [
                        {"name": "workspace", "mountPath": WORKSPACE},
                        {"name": "packages", "mountPath": PACKAGES, "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "shm", "mountPath": "/dev/shm"},
                    ],
                    "stdin": False,
                    "tty": False,
                }
            ],
            "volumes": [
                {"name": "workspace", "emptyDir": {"sizeLimit": f"{int(res.disk_mb)}Mi"}},
                # Per-session dependencies: written only by the packages container (packages.py).
                packages.volume(),
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": f"{scratch_mb}Mi"}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{scratch_mb}Mi"}},
            ],
        },
    }
    pod["spec"]["containers"].append(
        packages.sidecar_container(
            image=image, image_pull_policy=image_pull_policy, security_context=container_security
        )
    )
    if runtime_class:
        pod["spec"]["runtimeClassName"] = runtime_class
    if isolate_network:
        # First of the pod's containers, so the kubelet starts it before the sandbox's, in the same pass; an
        # init container would hold the sandbox back until the kubelet's next status cycle (0.3-1 s). The
        # runtime hands the sandbox out only once its executor sees no interface but lo up (/health).
        pod["spec"]["containers"].insert(0, network_container(image, image_pull_policy))
    if node_selector:
        pod["spec"]["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["spec"]["tolerations"] = list(tolerations)
    if preferred_nodes:
        # Nodes that already hold the image start the pod without a pull: preferred, never required (a
        # node missing from a cached list, or a full one, must still be chosen when it is the only fit).
        term = {
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": sorted(preferred_nodes)}]
        }
        pod["spec"]["affinity"] = {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": term}]
            }
        }
    return pod


# Run by the pod's network container: every interface of the pod's network namespace but lo goes down (and
# with it every route), and it exits non-zero, which fails the create, if one stays up. The images have no
# iproute2: it is the template's own python3 with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls.
NETWORK_DOWN = """
import fcntl, os, socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def flags(name, new=None):
    request = 0x8914 if new is not None else 0x8913
    return struct.unpack("16sH22x", fcntl.ioctl(sock, request, struct.pack("16sH22x", name, new or 0)))[1]
up = []
for name in sorted(os.listdir("/sys/class/net")):
    if name != "lo":
        flags(name.encode(), flags(name.encode()) & ~1)
        if flags(name.encode()) & 1:
            up.append(name)
if up:
    sys.exit("network interfaces still up: " + " ".join(up))
"""


def network_container(image: str, image_pull_policy: str) -> dict[str, Any]:
    """The container that takes the pod off its network before the sandbox is handed out, then exits.

    The CNI gives every pod an interface on the pod network; a NetworkPolicy closes it only where the CNI
    enforces policies. With the interface down the sandbox has loopback only, whatever the CNI, and its
    container, which has no capabilities, cannot bring it back up. The API server's port-forward still
    reaches the executor: the kubelet connects to 127.0.0.1 inside the pod's network namespace. Root with
    NET_ADMIN alone, read-only root, no volumes, for a fraction of a second (restartPolicy Never: it stays
    exited). No sandboxed code runs before the runtime has confirmed the result from the sandbox's own
    side (the executor's /health lists the interfaces that are up). Clusters whose admission refuses
    it turn it off (SANDBOX_K8S_ISOLATE_NETWORK=false) and rely on the NetworkPolicy and a CNI enforcing it.
    """
    return {
        "name": "network",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["python3", "-I", "-S", "-c", NETWORK_DOWN],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "32Mi"}},
    }


NETWORK_POLICY = "sandbox-deny-all"


def network_policy_manifest() -> dict[str, Any]:
    """Deny all ingress and egress for every sandbox pod in the namespace (networking/v1).

    Enforced only where the CNI implements NetworkPolicy (Calico, Cilium, ...); the test cluster's bridge
    CNI accepts it but enforces nothing, there the pods simply have no route off their network.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": NETWORK_POLICY, "labels": {LABEL_MANAGED: "true"}},
        "spec": {
            "podSelector": {"matchLabels": {LABEL_MANAGED: "true"}},
            "policyTypes": ["Ingress", "Egress"],
        },
    }
