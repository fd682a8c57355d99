"""The kubernetes runtime with the access an operator gives it: deploy/kubernetes/rbac.yaml, as it is.

A namespace of the test's own gets the file's ServiceAccount, Role and RoleBinding; the runtime then works
with only that account's token (create, execute, inspect, list, destroy), so the Role is proven sufficient on
a real API server. An account without the Role, and a namespace that does not exist, give a clear permanent
RuntimeFailure that names what to fix, never an unexplained error.
"""

from __future__ import annotations

import base64
import io
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.base import RuntimeFailure, SandboxSpec
from runtime.tests.conftest import run_code
from sandbox_site.testing import wait_until

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(
        os.environ.get("SANDBOX_K8S_TESTS") != "1",
        reason="needs a Kubernetes cluster: set SANDBOX_K8S_TESTS=1 and KUBECONFIG (README, 'Kubernetes')",
    ),
]

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "rbac.yaml"
RBAC_NODES = RBAC.with_name("rbac-nodes.yaml")
IMAGE = os.environ.get("SANDBOX_K8S_PYTHON_IMAGE", "sandbox-template-python-basic:latest")
PULL_POLICY = os.environ.get("SANDBOX_K8S_IMAGE_PULL_POLICY", "Never")


def admin_core() -> Any:
    from runtime.kubernetes import KubernetesRuntime

    return KubernetesRuntime().core()


def service_account_token(core: Any, namespace: str, account: str) -> str:
    """The token of `account` (v1.20's token controller writes it into a Secret; newer clusters are asked
    for one through the TokenRequest API)."""
    from kubernetes import client as k8s

    try:
        request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[]))
        made = core.create_namespaced_service_account_token(account, namespace, request)
        if made.status.token:
            return str(made.status.token)
    except Exception:  # noqa: BLE001 - an older API server: fall back to the controller's Secret
        pass

    def secret_token() -> str | None:
        for secret in core.list_namespaced_secret(namespace).items:
            annotations = secret.metadata.annotations or {}
            if (
                secret.type == "kubernetes.io/service-account-token"
                and annotations.get("kubernetes.io/service-account.name") == account
                and (secret.data or {}).get("token")
            ):
                return base64.b64decode(secret.data["token"]).decode()
        return None

    return str(wait_until(secret_token, timeout=30, what=f"a token for service account {account}"))


def kubeconfig_with_token(path: Path, token: str, namespace: str) -> str:
    """A kubeconfig for the current cluster (server and CA from the admin's) that authenticates with `token`."""
    admin = yaml.safe_load(Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser().read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "sandbox-test", "user": {"token": token}}],
        "contexts": [
            {
                "name": "sandbox-test",
                "context": {"cluster": cluster["name"], "user": "sandbox-test", "namespace": namespace},
            }
        ],
        "current-context": "sandbox-test",
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    """A namespace of this test module's own, with deploy/kubernetes/rbac.yaml applied to it."""
    from kubernetes import client as k8s
    from kubernetes import utils

    core = admin_core()
    name = f"sandbox-rbac-{secrets.token_hex(4)}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        utils.create_from_yaml(
            core.api_client, yaml_objects=list(yaml.safe_load_all(RBAC.read_text())), namespace=name
        )
        core.create_namespaced_service_account(name, {"metadata": {"name": "no-role"}})
        yield name
    finally:
        core.delete_namespace(name, body=k8s.V1DeleteOptions(grace_period_seconds=0))


def runtime_as(tmp_path: Path, account: str, namespace: str) -> Any:
    from runtime.kubernetes import KubernetesRuntime

    token = service_account_token(admin_core(), namespace, account)
    return KubernetesRuntime(
        kubeconfig=kubeconfig_with_token(tmp_path / f"{account}.kubeconfig", token, namespace),
        namespace=namespace,
        image_pull_policy=PULL_POLICY,
        instance=f"rbac-{uuid.uuid4().hex[:8]}",
    )


def spec() -> SandboxSpec:
    return SandboxSpec(
        session_id=f"rbac-{uuid.uuid4().hex[:12]}", image=IMAGE, token=secrets.token_urlsafe(32)
    )


def test_the_role_in_rbac_yaml_is_enough_for_a_whole_sandbox_lifecycle(
    tmp_path: Path, namespace: str
) -> None:
    runtime = runtime_as(tmp_path, "sandbox-control-plane", namespace)
    runtime.check()
    handle = runtime.create(spec())
    try:
        out = run_code(runtime, handle, "print(sum(range(10)))")
        assert out.status == "completed" and out.stdout == "45\n", (out.result, out.stderr)
        client = runtime.executor(handle)
        client.upload("data/in.txt", io.BytesIO(b"hello"), 5)
        assert b"".join(client.download("data/in.txt")) == b"hello"
        state = runtime.inspect(handle)
        assert state.exists and state.running, state
        # Without rbac-nodes.yaml: no usage figures and no node preference, and nothing fails for it.
        assert state.cpu_percent is None and state.memory_mb is None
        assert "affinity" not in (
            runtime.core().api_client.sanitize_for_serialization(
                admin_core().read_namespaced_pod(handle.sandbox_id, namespace).spec
            )
        )
        assert [h.session_id for h in runtime.list_managed()] == [handle.session_id]
    finally:
        runtime.destroy(handle)
    assert runtime.list_managed() == []


def test_an_account_without_the_role_gets_a_clear_permanent_failure(tmp_path: Path, namespace: str) -> None:
    runtime = runtime_as(tmp_path, "no-role", namespace)
    with pytest.raises(RuntimeFailure) as refused:
        runtime.create(spec())
    assert refused.value.permanent
    assert "refused (403)" in refused.value.message and "rbac.yaml" in refused.value.message
    with pytest.raises(RuntimeFailure) as check:
        runtime.check()
    assert "403" in check.value.message


def test_a_missing_namespace_names_the_setting() -> None:
    from runtime.kubernetes import KubernetesRuntime

    runtime = KubernetesRuntime(namespace=f"no-such-{secrets.token_hex(4)}", image_pull_policy=PULL_POLICY)
    with pytest.raises(RuntimeFailure) as missing:
        runtime.create(spec())
    assert missing.value.permanent
    assert "SANDBOX_K8S_NAMESPACE" in missing.value.message, missing.value.message


@pytest.fixture
def node_access(namespace: str) -> Iterator[None]:
    """deploy/kubernetes/rbac-nodes.yaml bound to the namespace's service account, under names of its own."""
    from kubernetes import client as k8s
    from kubernetes import utils

    suffix = namespace.rsplit("-", 1)[-1]
    objects = list(yaml.safe_load_all(RBAC_NODES.read_text()))
    for obj in objects:
        obj["metadata"]["name"] += f"-{suffix}"
        if obj["kind"] == "ClusterRoleBinding":
            obj["roleRef"]["name"] += f"-{suffix}"
            obj["subjects"][0]["namespace"] = namespace
    core = admin_core()
    utils.create_from_yaml(core.api_client, yaml_objects=objects)
    try:
        yield
    finally:
        rbac = k8s.RbacAuthorizationV1Api(core.api_client)
        rbac.delete_cluster_role_binding(f"sandbox-control-plane-nodes-{suffix}")
        rbac.delete_cluster_role(f"sandbox-control-plane-nodes-{suffix}")


def test_with_rbac_nodes_yaml_pods_prefer_nodes_holding_their_image_and_usage_is_reported(
    tmp_path: Path, namespace: str, node_access: None
) -> None:
    runtime = runtime_as(tmp_path, "sandbox-control-plane", namespace)
    handle = runtime.create(spec())
    try:
        pod = admin_core().read_namespaced_pod(handle.sandbox_id, namespace)
        terms = pod.spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution
        assert pod.spec.node_name in terms[0].preference.match_fields[0].values
        run_code(runtime, handle, "sum(range(10**6))")

        def usage() -> Any:
            state = runtime.inspect(handle)
            return state if state.memory_mb is not None and state.cpu_percent is not None else None

        # The kubelet samples every few seconds; the figures come through the API server's node proxy.
        state = wait_until(usage, timeout=90, interval=1.0, what="usage figures of the sandbox's container")
        assert 1 < state.memory_mb < 512, state
    finally:
        runtime.destroy(handle)
