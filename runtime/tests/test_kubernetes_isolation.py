"""Attacks from inside real pods of the kubernetes runtime, beyond what the backend contract asks of every
backend: what sandboxed code can observe and do in its pod, whether it can reach the cluster, the host or
another session's pod, and what a fork bomb, a memory hog or a disk filler does to its own session, to other
sessions and to the control plane.

Every test runs real code in real pods on the cluster KUBECONFIG names (collected only with
SANDBOX_K8S_TESTS=1); the pods carry an instance label of this module's own and are deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.base import RuntimeFailure
from runtime.kubernetes import spec as ks
from runtime.tests.conftest import run_code
from runtime.tests.contract.backends import KubernetesBackend, open_backend
from runtime.tests.contract.conftest import run_json, still_serves
from sandbox_site.testing import wait_until

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(
        os.environ.get("SANDBOX_K8S_TESTS") != "1",
        reason="needs a Kubernetes cluster: set SANDBOX_K8S_TESTS=1 and KUBECONFIG (README, 'Kubernetes')",
    ),
]

# A small cpu share: these pods share the node with other tests' (a pod requests a quarter of its cpu).
CPU = 0.5

# Tries to connect to each (host, port) and says how it failed; "CONNECTED" when it did not.
CONNECT = """
import json, socket
results = {}
for host, port in TARGETS:
    try:
        socket.create_connection((host, port), timeout=3).close()
        results[f"{host}:{port}"] = "CONNECTED"
    except OSError as exc:
        results[f"{host}:{port}"] = type(exc).__name__ + " " + str(exc.errno)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def k8s() -> Iterator[KubernetesBackend]:
    backend = open_backend("kubernetes")
    assert isinstance(backend, KubernetesBackend)
    yield backend
    backend.close()


@pytest.fixture(autouse=True)
def _destroy_what_the_test_made(k8s: KubernetesBackend) -> Iterator[None]:
    yield
    k8s.destroy_made()


def pod_of(k8s: KubernetesBackend, handle: Any) -> Any:
    return k8s.runtime.core().read_namespaced_pod(handle.sandbox_id, k8s.runtime.namespace)  # type: ignore[attr-defined]


def host_address() -> str:
    """This host's address on its default route (no packet is sent: a UDP socket only picks the source)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def pod_ip(k8s: KubernetesBackend, handle: Any) -> str:
    """The pod's address on the pod network, once the kubelet has reported it (a sandbox is handed out as
    soon as its executor answers, which can be before the kubelet's next status update)."""
    return str(wait_until(lambda: pod_of(k8s, handle).status.pod_ip, what="the pod's reported address"))


def listen_in(k8s: KubernetesBackend, handle: Any, port: int, seconds: float) -> threading.Thread:
    """An execution in `handle` that listens on every address of its pod at `port` for `seconds`."""
    code = (
        "import socket, time\n"
        "server = socket.socket()\n"
        f"server.bind(('0.0.0.0', {port}))\n"
        "server.listen(8)\n"
        "server.settimeout(0.2)\n"
        "print('listening', flush=True)\n"
        "accepted = 0\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end:\n"
        "    try:\n"
        "        server.accept()[0].close(); accepted += 1\n"
        "    except socket.timeout:\n"
        "        pass\n"
        "print('accepted', accepted)\n"
    )
    thread = threading.Thread(
        target=run_code, args=(k8s.runtime, handle, code), kwargs={"timeout": seconds + 10}, daemon=True
    )
    thread.start()
    # Listening: the pod's own loopback answers on the port.
    wait_until(
        lambda: "CONNECTED" in k8s._exec(handle, CONNECT.replace("TARGETS", f"[('127.0.0.1', {port})]")),
        what=f"the listener on port {port}",
        timeout=30,
    )
    return thread


def test_code_in_a_pod_is_unprivileged_read_only_filtered_and_holds_no_cluster_credentials(k8s):
    handle = k8s.make(cpu=CPU)
    seen = run_json(
        k8s,
        handle,
        """
import json, os
fields = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
root = [line.split() for line in open("/proc/mounts") if line.split()[1] == "/"][-1]
try:
    open("/usr/evil", "w")
    root_write = "WROTE"
except OSError as exc:
    root_write = type(exc).__name__ + " " + str(exc.errno)
found = []
for top in ("/var/run/secrets", "/run/secrets"):
    for dirpath, _, filenames in os.walk(top):
        found += [os.path.join(dirpath, name) for name in filenames]
print(json.dumps({
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
    **{k: fields[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")},
    "root": root[3].split(",")[0], "root_write": root_write,
    "sa": os.path.exists("/var/run/secrets/kubernetes.io"), "secrets": found,
    "token_env": sorted(k for k in os.environ if "TOKEN" in k.upper()),
}))
""",
    )
    uid = ks.sandbox_uid(handle.session_id)
    assert seen["uid"] == seen["euid"] == seen["gid"] == uid != 0 and 0 not in seen["groups"]
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(seen[name], 16) == 0, (name, seen)
    assert seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2"
    assert seen["root"] == "ro" and seen["root_write"] == "OSError 30"  # EROFS
    assert seen["sa"] is False and seen["secrets"] == [] and seen["token_env"] == []
    # What the API server holds agrees: no token mounted, the session's own uid, no capability added.
    pod = pod_of(k8s, handle)
    assert pod.spec.automount_service_account_token is False
    assert not any(volume.projected for volume in pod.spec.volumes)  # where newer clusters put the token
    mounts = [m.mount_path for c in pod.spec.containers for m in c.volume_mounts or []]
    assert not any(path.startswith(("/var/run/secrets", "/run/secrets")) for path in mounts), mounts
    assert pod.spec.security_context.run_as_user == uid and pod.spec.security_context.fs_group == uid


def test_no_route_leaves_the_pod_and_nothing_reaches_the_host_the_api_server_or_another_pod(k8s):
    a, b = k8s.make(cpu=CPU), k8s.make(cpu=CPU)
    b_ip = pod_ip(k8s, b)
    assert b_ip, "the pod has an address on the pod network (taken down inside it)"
    listener = listen_in(k8s, b, 8080, seconds=15)
    targets = [
        (b_ip, 8080),  # another session's pod, listening on every address
        (b_ip, ks.EXECUTOR_PORT),  # its executor (which listens on its loopback only anyway)
        (host_address(), 16443),  # the host, where the test cluster's API server listens
        ("10.96.0.1", 443),  # the API server's Service address
        ("10.244.77.1", 80),  # the pod bridge's gateway address
        ("1.1.1.1", 443),
    ]
    routes = run_json(
        k8s,
        a,
        "import json\nprint(json.dumps(open('/proc/net/route').read().splitlines()[1:]))",
    )
    assert routes == []  # no default route, no route to the pod subnet
    results = run_json(k8s, a, CONNECT.replace("TARGETS", repr(targets)))
    assert "CONNECTED" not in " ".join(results.values()), results
    # Unreachable, not merely refused: nothing left the pod (ENETUNREACH = 101).
    assert all(value.endswith(" 101") for value in results.values()), results
    listener.join(30)
    assert not listener.is_alive()


def test_without_the_network_container_packets_do_leave_the_pod(k8s):
    """The control for the test above: the same probe from a pod whose interface was left up gets past its
    own network stack (a route, and no ENETUNREACH), so "unreachable" above is the network container's doing.
    (Whether the packet then arrives is the node's business: the test host's firewall drops bridged traffic.)"""
    open_runtime = k8s.build(data_dir=f"/tmp/k8s-open-{secrets.token_hex(4)}", isolate_network=False)
    try:
        a, b = k8s.make(runtime=open_runtime, cpu=CPU), k8s.make(runtime=open_runtime, cpu=CPU)
        b_ip = pod_ip(k8s, b)
        routes = run_json(
            k8s, a, "import json\nprint(json.dumps(open('/proc/net/route').read().splitlines()[1:]))"
        )
        assert routes, "a pod left on its network has a route to the pod subnet"
        results = run_json(k8s, a, CONNECT.replace("TARGETS", repr([(b_ip, 8080)])))
        assert not results[f"{b_ip}:8080"].endswith(" 101"), results
    finally:
        k8s.destroy_made()


def test_a_fork_bomb_ends_clearly_while_another_sessions_pod_keeps_starting_processes(k8s):
    bomb, other = k8s.make(max_processes=64, cpu=CPU), k8s.make(max_processes=64, cpu=CPU)
    assert ks.sandbox_uid(bomb.session_id) != ks.sandbox_uid(other.session_id)  # RLIMIT_NPROC is per uid
    baseline = k8s.processes(bomb)
    outcome: dict[str, Any] = {}

    def detonate() -> None:
        outcome["bomb"] = run_code(
            k8s.runtime,
            bomb,
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            timeout=8,
        )

    thread = threading.Thread(target=detonate, daemon=True)
    thread.start()
    # While the bomb runs (and holds its uid's whole allowance), the other session starts processes freely.
    spawned = []
    while thread.is_alive() or not spawned:
        out = run_code(
            k8s.runtime,
            other,
            "import subprocess\nprint(sum(subprocess.run(['true']).returncode == 0 for _ in range(20)))",
            timeout=20,
        )
        assert out.status == "completed" and out.stdout == "20\n", out.result
        spawned.append(out)
    thread.join(30)
    bombed = outcome["bomb"]
    assert bombed.status in ("timeout", "failed", "crashed") and bombed.result.error, bombed.result
    wait_until(lambda: k8s.processes(bomb) == baseline, what="every bomb process to be gone", interval=0.5)
    still_serves(k8s, bomb)
    still_serves(k8s, other)
    # What bound the bomb: forks past max_processes fail with EAGAIN (RLIMIT_NPROC of the pod's uid).
    counted = run_json(
        k8s,
        bomb,
        """
import errno, json, os, signal
children = []
try:
    while len(children) < 500:
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        children.append(pid)
    failure = None
except OSError as exc:
    failure = errno.errorcode[exc.errno]
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "failure": failure}))
""",
    )
    assert counted["failure"] == "EAGAIN" and 0 < counted["forked"] < 64, counted


def test_a_memory_hog_is_killed_with_a_clear_error_and_its_pod_and_the_others_go_on(k8s):
    hog, other = k8s.make(memory_mb=256, cpu=CPU), k8s.make(memory_mb=256, cpu=CPU)
    out = run_code(
        k8s.runtime,
        hog,
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024 * 1024))\n",
        timeout=60,
    )
    if out.status == "failed":  # the allocation itself was refused
        assert "MemoryError" in (out.result.error or ""), out.result
    else:
        assert out.status == "crashed" and "memory" in (out.result.error or "").lower(), out.result
    state = k8s.runtime.inspect(hog)
    assert state.running, state  # the execution died, not the pod
    assert pod_of(k8s, hog).status.container_statuses[0].restart_count == 0
    still_serves(k8s, hog)
    still_serves(k8s, other)


def test_a_workspace_past_its_disk_limit_gets_the_pod_evicted_with_a_reason_and_the_session_can_start_again(
    k8s,
):
    filler, other = k8s.make(disk_mb=32, cpu=CPU), k8s.make(cpu=CPU)
    big = run_code(k8s.runtime, filler, "open('one', 'wb').write(b'x' * (64 << 20))", timeout=30)
    assert big.status == "failed" and "File too large" in (big.result.error or ""), big.result
    many = run_code(
        k8s.runtime,
        filler,
        "import os\nos.remove('one')\nfor i in range(20):\n    open(f'part{i}', 'wb').write(b'x' * (4 << 20))\n"
        "print('wrote')",
        timeout=30,
    )
    assert many.status in ("completed", "crashed"), many.result

    def ended() -> Any:
        state = k8s.runtime.inspect(filler)
        return None if state.running else state

    state = wait_until(ended, timeout=150, interval=1, what="the pod past its disk limit to be evicted")
    assert "Evicted" in state.detail and "workspace" in state.detail, state
    # The ended sandbox answers with a clear failure, not a hang; the control plane serves the others.
    with pytest.raises(RuntimeFailure):
        run_code(k8s.runtime, filler, "print(1)", timeout=5)
    still_serves(k8s, other)
    again = k8s.make(session_id=filler.session_id, cpu=CPU)  # the evicted pod does not block its session
    still_serves(k8s, again)


def test_the_sandbox_is_handed_out_only_once_it_sees_itself_off_the_network(k8s):
    handle = k8s.make(cpu=CPU)
    # The moment create returns, the sandbox's own side already sees no interface but lo up.
    assert k8s.runtime.executor(handle).health()["interfaces_up"] == []
    pod = pod_of(k8s, handle)
    assert [c.name for c in pod.spec.containers][:1] == ["network"]
    assert pod.spec.containers[0].security_context.capabilities.add == ["NET_ADMIN"]

    def network_exited() -> Any:
        statuses = pod_of(k8s, handle).status.container_statuses or []
        status = next((s for s in statuses if s.name == "network"), None)
        return status if status is not None and status.state.terminated is not None else None

    status = wait_until(network_exited, what="the kubelet reporting the network container's exit")
    assert status.state.terminated.exit_code == 0 and not status.restart_count
    assert k8s.runtime.inspect(handle).running  # an exited network container is not the sandbox ending
    still_serves(k8s, handle)  # through the API server's port-forward, on the pod's loopback
