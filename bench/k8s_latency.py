"""What the kubernetes runtime adds to Kubernetes itself: raw pod start and exec against our create and execute.

In one run on one cluster, alternating so a busy host slows all alike:
  raw pod create   create a bare pod (same image, `sleep`) through the API, poll until phase Running (50 ms);
  raw exec         an exec stream running `python3 -c pass` in that pod (kubernetes client, through the API);
  runtime create   KubernetesRuntime.create, cold: token Secret, hardened pod, Running, executor /health;
  runtime execute  KubernetesRuntime.execute of a trivial handler (port-forward, POST /execute, events).
KubernetesRuntime is called directly: the control plane's REST API path is not measured here.
Prints median and p95 of each, the ratios runtime/raw, and the host's load average before and after.
Every pod it creates is deleted, also on failure.

Usage: KUBECONFIG=... python bench/k8s_latency.py [--runs 10] [--execs 5] [--namespace default]
       [--image IMAGE] [--pull-policy Never] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kubernetes import client as k8s  # noqa: E402
from kubernetes.stream import stream  # noqa: E402

from runtime.base import SandboxSpec  # noqa: E402
from runtime.kubernetes import KubernetesRuntime  # noqa: E402
from runtime.kubernetes.transport import STREAM_LOCK  # noqa: E402
from runtime.tests.conftest import run_code  # noqa: E402

BENCH_LABEL = {"sandbox-bench": "k8s-latency"}
HANDLER = "def handler(event):\n    return 1\n"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def raw_pod(name: str, image: str, pull_policy: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(BENCH_LABEL)},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": pull_policy,
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }


def wait_running(core: Any, name: str, namespace: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase == "Running":
            return
        if pod.status.phase in ("Failed", "Succeeded") or time.monotonic() > deadline:
            raise RuntimeError(f"raw pod {name} did not run: {pod.status.phase} {pod.status.reason or ''}")
        time.sleep(0.05)


def delete_raw(core: Any, name: str, namespace: str) -> None:
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise


def wait_gone(core: Any, namespace: str, selector: str, timeout: float = 120.0) -> int:
    """Wait until no pod matches `selector`; return how many are left at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = len(core.list_namespaced_pod(namespace, label_selector=selector).items)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="pods of each kind")
    parser.add_argument("--execs", type=int, default=5, help="exec / execute samples per pod")
    parser.add_argument("--namespace", default=os.environ.get("SANDBOX_K8S_NAMESPACE", "default"))
    parser.add_argument("--image", default="sandbox-template-python-basic:latest")
    parser.add_argument("--pull-policy", default="Never")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    instance = f"bench-{uuid.uuid4().hex[:6]}"
    runtime = KubernetesRuntime(
        namespace=args.namespace, image_pull_policy=args.pull_policy, instance=instance
    )
    core = runtime.core()
    stream_core = runtime.stream_core()
    samples: dict[str, list[float]] = {
        "raw pod create to Running": [],
        "runtime create (cold)": [],
        "raw exec python3 -c pass": [],
        "runtime execute (handler)": [],
    }
    load_before = os.getloadavg()
    try:
        for _ in range(args.runs):
            name = f"bench-raw-{uuid.uuid4().hex[:8]}"
            t = time.perf_counter()
            core.create_namespaced_pod(args.namespace, raw_pod(name, args.image, args.pull_policy))
            try:
                wait_running(core, name, args.namespace)
                samples["raw pod create to Running"].append(time.perf_counter() - t)
                for _ in range(args.execs):
                    t = time.perf_counter()
                    with STREAM_LOCK:
                        resp = stream(
                            stream_core.connect_get_namespaced_pod_exec,
                            name,
                            args.namespace,
                            container="main",
                            command=["python3", "-c", "pass"],
                            stderr=True,
                            stdin=False,
                            stdout=True,
                            tty=False,
                            _preload_content=False,
                        )
                    resp.run_forever(timeout=30)
                    code = resp.returncode
                    resp.close()
                    assert code == 0, f"raw exec exited {code}"
                    samples["raw exec python3 -c pass"].append(time.perf_counter() - t)
            finally:
                delete_raw(core, name, args.namespace)

            t = time.perf_counter()
            handle = runtime.create(
                SandboxSpec(
                    session_id=f"bench{uuid.uuid4().hex[:8]}",
                    image=args.image,
                    token=secrets.token_urlsafe(24),
                )
            )
            try:
                samples["runtime create (cold)"].append(time.perf_counter() - t)
                for _ in range(args.execs):
                    t = time.perf_counter()
                    out = run_code(runtime, handle, HANDLER)
                    assert out.status == "completed", out.result
                    samples["runtime execute (handler)"].append(time.perf_counter() - t)
            finally:
                runtime.destroy(handle)
    finally:
        left = wait_gone(core, args.namespace, ",".join(f"{k}={v}" for k, v in BENCH_LABEL.items()))
        left += len(runtime.list_managed())
    load_after = os.getloadavg()

    table = {
        name: {"median_ms": statistics.median(v) * 1000, "p95_ms": p95(v) * 1000, "n": len(v)}
        for name, v in samples.items()
    }
    ratios = {
        "create: runtime / raw": table["runtime create (cold)"]["median_ms"]
        / table["raw pod create to Running"]["median_ms"],
        "execute: runtime / raw exec": table["runtime execute (handler)"]["median_ms"]
        / table["raw exec python3 -c pass"]["median_ms"],
    }
    report = {
        "load_before": load_before,
        "load_after": load_after,
        "latency": table,
        "median_ratios": ratios,
        "pods_left": left,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("Kubernetes: raw API against KubernetesRuntime called directly (not through the REST API)")
    print(f"{'':<30}{'median ms':>12}{'p95 ms':>10}{'n':>6}")
    for name, row in table.items():
        print(f"{name:<30}{row['median_ms']:>12.1f}{row['p95_ms']:>10.1f}{row['n']:>6}")
    for name, ratio in ratios.items():
        print(f"median ratio {name}: {ratio:.2f}x")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f}; pods left: {left}"
    )


if __name__ == "__main__":
    main()
