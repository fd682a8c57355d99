"""The kubernetes backend without a cluster: its settings, its pod's hardening, and clear failures when the
API server cannot be reached. What every backend must do is in the contract suite (SANDBOX_K8S_TESTS=1)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from runtime.base import Resources, RuntimeFailure, SandboxHandle, SandboxSpec
from runtime.kubernetes import KubernetesRuntime
from runtime.kubernetes import spec as ks

UNREACHABLE = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_it_reads_its_settings_in_every_accepted_shape():
    settings = SimpleNamespace(
        SANDBOX_K8S_NAMESPACE="sandboxes",
        SANDBOX_K8S_IMAGE_PULL_POLICY="Never",
        SANDBOX_K8S_RUNTIME_CLASS="gvisor",
        SANDBOX_K8S_NODE_SELECTOR="pool=sandbox, zone=a",
        SANDBOX_K8S_TOLERATIONS='[{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}]',
        SANDBOX_K8S_POD_START_TIMEOUT="45",
        SANDBOX_K8S_INSTANCE="eu-1",
    )
    config = KubernetesRuntime.config_from_settings(settings)
    assert config == {
        "namespace": "sandboxes",
        "image_pull_policy": "Never",
        "runtime_class": "gvisor",
        "node_selector": {"pool": "sandbox", "zone": "a"},
        "tolerations": [{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}],
        "instance": "eu-1",
        "startup_timeout": 45.0,
    }
    assert KubernetesRuntime(**config).namespace == "sandboxes"


def test_an_unknown_pull_policy_is_refused():
    with pytest.raises(RuntimeFailure) as info:
        KubernetesRuntime(image_pull_policy="Sometimes")
    assert info.value.permanent and "SANDBOX_K8S_IMAGE_PULL_POLICY" in info.value.message


def test_an_unreachable_api_server_is_a_runtime_failure_not_a_crash(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE)
    runtime = KubernetesRuntime(kubeconfig=str(kubeconfig))  # constructing needs no cluster
    handle = SandboxHandle(backend="kubernetes", sandbox_id="", session_id="s1", endpoint="", token="t")
    for call in (runtime.check, runtime.list_managed, lambda: runtime.inspect(handle)):
        with pytest.raises(RuntimeFailure) as info:
            call()
        assert "unreachable" in info.value.message


def test_the_pod_is_hardened_and_carries_no_token():
    spec = SandboxSpec(
        session_id="Session_1", image="img", token="s3cret-token", resources=Resources(cpu=0.5, memory_mb=256)
    )
    pod = ks.pod_manifest(
        spec, image="img", env={"A": "1"}, instance="i", uid=1000, gid=1000, image_pull_policy="Never"
    )
    assert "s3cret-token" not in repr(pod)
    assert pod["metadata"]["name"] == ks.pod_name("Session_1") and pod["metadata"]["name"].islower()
    assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["enableServiceLinks"] is False
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] == 1000
        assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["imagePullPolicy"] == "Never"
    main = pod["spec"]["containers"][0]
    assert main["resources"]["limits"]["memory"] == "256Mi" and main["resources"]["limits"]["cpu"] == "500m"
    assert all(mount["name"] != "token" for mount in main["volumeMounts"])
    # The executor is given the token's SHA-256 only: no Secret, no volume, no init container carries it.
    digest = hashlib.sha256(b"s3cret-token").hexdigest()
    assert main["args"][main["args"].index("--token-sha256") + 1] == digest
    assert "--token-file" not in main["args"]
    assert all("secret" not in volume for volume in pod["spec"]["volumes"])


def test_the_network_policy_denies_everything_to_every_sandbox_pod():
    policy = ks.network_policy_manifest()
    assert policy["spec"]["podSelector"] == {"matchLabels": {ks.LABEL_MANAGED: "true"}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]  # no rule: nothing allowed
    pod = ks.pod_manifest(
        SandboxSpec(session_id="s", image="i", token="t"),
        image="i",
        env={},
        instance="x",
        uid=1000,
        gid=1000,
        image_pull_policy="IfNotPresent",
    )
    assert pod["metadata"]["labels"][ks.LABEL_MANAGED] == "true"  # so the policy selects it


def test_usage_is_read_from_the_sandbox_container_of_its_own_pod_in_a_kubelet_summary():
    from runtime.kubernetes.backend import usage_from_summary

    def pod(name, uid, containers):
        return {"podRef": {"name": name, "namespace": "ns", "uid": uid}, "containers": containers}

    sandbox = {
        "name": ks.CONTAINER,
        "cpu": {"usageNanoCores": 25_000_000},
        "memory": {"workingSetBytes": 3 << 20},
    }
    summary = {
        "pods": [
            pod("other", "u0", [dict(sandbox, memory={"workingSetBytes": 9 << 20})]),
            pod("sbx", "old", [dict(sandbox, memory={"workingSetBytes": 7 << 20})]),
            pod("sbx", "u1", [{"name": "copy-token", "memory": {"workingSetBytes": 1}}, sandbox]),
        ]
    }
    assert usage_from_summary(summary, "ns", "sbx", "u1") == (2.5, 3.0)
    # Not yet sampled: the kubelet leaves the figure out, and so does inspect.
    fresh = {"pods": [pod("sbx", "u1", [{"name": ks.CONTAINER, "memory": {"workingSetBytes": 1 << 20}}])]}
    assert usage_from_summary(fresh, "ns", "sbx", "u1") == (None, 1.0)
    assert usage_from_summary(summary, "other-ns", "sbx", "u1") == (None, None)
    assert usage_from_summary({}, "ns", "sbx") == (None, None)


def test_closing_a_port_forward_socket_with_unread_data_gives_the_proxy_an_orderly_end():
    import socket
    import threading

    from runtime.kubernetes.transport import QuietClose

    ours, proxy = socket.socketpair()
    proxy.sendall(b"x" * 100_000)  # a response body the application stops reading
    sock = QuietClose(ours)
    closer = threading.Thread(target=sock.close)
    closer.start()
    # The proxy's side reads the end of stream (not ConnectionResetError), then closes its end.
    proxy.settimeout(5)
    assert proxy.recv(1024) == b""
    proxy.close()
    closer.join(5)
    assert not closer.is_alive() and ours.fileno() == -1


@pytest.mark.parametrize(
    "value,expected", [("false", False), ("0", False), ("true", True), ("1", True), (False, False)]
)
def test_the_network_isolation_setting_is_read_and_reaches_the_runtime(value, expected):
    config = KubernetesRuntime.config_from_settings(SimpleNamespace(SANDBOX_K8S_ISOLATE_NETWORK=value))
    assert config["isolate_network"] is expected
    assert KubernetesRuntime(**config).isolate_network is expected
    assert KubernetesRuntime().isolate_network is True  # on unless turned off


def test_the_network_container_has_net_admin_alone_and_the_sandbox_nothing():
    spec = SandboxSpec(session_id="s1", image="img", token="t", resources=Resources(max_processes=50))
    common = {"image": "img", "env": {}, "instance": "i", "uid": 123456, "gid": 123456}
    pod = ks.pod_manifest(spec, **common, image_pull_policy="Never", isolate_network=True)
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    # Started first, in the same pass as the sandbox (not an init container the sandbox would wait for).
    assert pod["spec"]["containers"][0]["name"] == "network" and "initContainers" not in pod["spec"]
    network = containers["network"]
    assert "volumeMounts" not in network
    security = network["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert not security["privileged"] and security["seccompProfile"] == {"type": "RuntimeDefault"}
    main = containers[ks.CONTAINER]
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert main["securityContext"]["runAsUser"] == pod["spec"]["securityContext"]["fsGroup"] == 123456
    assert "nproc=50" in main["args"]
    without = ks.pod_manifest(spec, **common, image_pull_policy="Never", isolate_network=False)
    assert all(c["name"] != "network" for c in without["spec"]["containers"])


def test_each_session_gets_a_uid_of_its_own_in_the_documented_range():
    uids = {ks.sandbox_uid(f"session{i}") for i in range(2000)}
    assert len(uids) > 1990  # distinct but for rare collisions
    assert all(100000 <= uid < 1000000 for uid in uids)
    assert ks.sandbox_uid("session1") == ks.sandbox_uid("session1")


def test_pods_prefer_the_nodes_that_hold_their_image_without_requiring_them():
    spec = SandboxSpec(session_id="s", image="img", token="t")
    common = dict(image="img", env={}, instance="x", uid=1000, gid=1000, image_pull_policy="Never")
    assert "affinity" not in ks.pod_manifest(spec, **common)["spec"]
    pod = ks.pod_manifest(spec, **common, preferred_nodes=["node-b", "node-a"])
    node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in node_affinity
    [term] = node_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] > 0
    assert term["preference"] == {
        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a", "node-b"]}]
    }


def test_an_image_reference_matches_the_names_a_node_lists_for_it():
    from runtime.kubernetes.backend import image_names

    node_lists = "docker.io/library/sandbox-template-python-basic:latest"
    assert node_lists in image_names("sandbox-template-python-basic:latest")
    assert node_lists in image_names("sandbox-template-python-basic")
    assert "sandbox-template-python-basic:latest" in image_names(node_lists)
    assert "docker.io/peerbench/python:bookworm" in image_names("peerbench/python:bookworm")
    assert "registry.example:5000/team/img:1" in image_names("registry.example:5000/team/img:1")
    assert not image_names("sandbox-template-python-basic:latest") & image_names("other:latest")
    assert not image_names("python:3.12") & image_names("python:3.11")
