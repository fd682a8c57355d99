"""How the control plane reaches an executor on Kubernetes: port-forward against exec streams, one sandbox.

Both go through the API server (the control plane never talks to pod IPs):
  port-forward, kept alive  `GET /health` and `POST /execute` of `print(1)` through the runtime, whose
                clients share a pool of keep-alive port-forward connections per pod (the transport in use);
  port-forward, fresh       `GET /health` and `POST /execute` on a new port-forward stream each (no pool);
  exec                      an exec stream running `cat /proc/loadavg` in the sandbox's container (the least
                            an exec stream can do: a fresh process, no executor involved).
Samples alternate between them so a busy host slows all alike. Prints median and p95 per transport,
and the host's load average before and after.

Usage: KUBECONFIG=... python bench/k8s_transport.py [--runs 50] [--image IMAGE] [--pull-policy Never] [--json]
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kubernetes.stream import stream  # noqa: E402

from runtime.base import ExecuteRequest, SandboxSpec  # noqa: E402
from runtime.client import ExecutorClient  # noqa: E402
from runtime.events import ExecutionResult  # noqa: E402
from runtime.kubernetes import KubernetesRuntime, transport  # noqa: E402
from runtime.kubernetes import spec as ks  # noqa: E402
from runtime.kubernetes.transport import STREAM_LOCK  # noqa: E402
from runtime.tests.conftest import run_code  # noqa: E402


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--image", default="sandbox-template-python-basic:latest")
    parser.add_argument("--pull-policy", default="Never")
    parser.add_argument("--namespace", default=os.environ.get("SANDBOX_K8S_NAMESPACE", "default"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    runtime = KubernetesRuntime(
        namespace=args.namespace, image_pull_policy=args.pull_policy, instance="bench"
    )
    load_before = os.getloadavg()
    started = time.perf_counter()
    handle = runtime.create(
        SandboxSpec(
            session_id=f"bench-{uuid.uuid4().hex[:8]}", image=args.image, token=secrets.token_urlsafe(24)
        )
    )
    create_s = time.perf_counter() - started
    samples: dict[str, list[float]] = {
        "pooled health": [],
        "pooled execute": [],
        "fresh health": [],
        "fresh execute": [],
        "exec stream": [],
    }
    try:
        client = runtime.executor(handle)
        core = runtime.stream_core()
        fresh = ExecutorClient(
            handle.endpoint,
            handle.token,
            connector=transport.connector(core, args.namespace, handle.sandbox_id, ks.EXECUTOR_PORT),
        )
        run_code(runtime, handle, "print(1)")  # the zygote warms up; not measured
        for i in range(args.runs):
            t = time.perf_counter()
            client.health()
            samples["pooled health"].append(time.perf_counter() - t)
            t = time.perf_counter()
            out = run_code(runtime, handle, "print(1)")
            assert out.status == "completed" and out.stdout == "1\n", out.result
            samples["pooled execute"].append(time.perf_counter() - t)
            t = time.perf_counter()
            fresh.health()
            samples["fresh health"].append(time.perf_counter() - t)
            t = time.perf_counter()
            events = list(
                fresh.execute(ExecuteRequest(execution_id=f"fresh-{i}", language="python", code="print(1)"))
            )
            assert isinstance(events[-1], ExecutionResult) and events[-1].status == "completed", events
            samples["fresh execute"].append(time.perf_counter() - t)
            t = time.perf_counter()
            with STREAM_LOCK:
                text = stream(
                    core.connect_get_namespaced_pod_exec,
                    handle.sandbox_id,
                    args.namespace,
                    container="sandbox",
                    command=["cat", "/proc/loadavg"],
                    stderr=True,
                    stdin=False,
                    stdout=True,
                    tty=False,
                )
            assert text, "the exec stream returned nothing"
            samples["exec stream"].append(time.perf_counter() - t)
    finally:
        runtime.destroy(handle)
    load_after = os.getloadavg()
    table = {
        name: {"median_ms": statistics.median(values) * 1000, "p95_ms": p95(values) * 1000, "n": len(values)}
        for name, values in samples.items()
    }
    report = {"create_s": create_s, "load_before": load_before, "load_after": load_after, "transports": table}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"sandbox create (cold, one pod): {create_s * 1000:.0f} ms")
    print(f"{'transport':<24}{'median ms':>12}{'p95 ms':>10}{'n':>6}")
    for name, row in table.items():
        print(f"{name:<24}{row['median_ms']:>12.1f}{row['p95_ms']:>10.1f}{row['n']:>6}")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}"
    )


if __name__ == "__main__":
    main()
