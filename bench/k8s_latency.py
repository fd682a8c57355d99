"""Kubernetes runtime latency through the REST API against raw Kubernetes, in one run on one cluster.

Raw baselines, with the kubernetes client straight to the API server:
  raw pod create   create a bare pod of the template image (`sleep`), watch it until phase Running;
  raw exec         an exec stream running `python3 -c pass` in such a pod.
Ours, through the REST API of the real product (`manage.py serve`: uvicorn + a django-q2 worker) with
SANDBOX_RUNTIME=kubernetes, SANDBOX_K8S_IMAGE_PULL_POLICY=Never and an instance label of this run:
  cold create   `POST /api/v1/sessions` until it answers with a running session, warm pool empty;
  warm create   the same with the template's warm pool filled (the bench waits for the pool to be full again
                before each create, so the refill itself is not what is measured);
  round trip    `POST /api/v1/sessions/<id>/execute-sync` of `def handler(event, context): return 1` on a
                running session, until the finished execution comes back.
Raw pod creates alternate with cold creates, raw execs with round trips, so a busy host slows both sides of
a ratio alike. Each session is deleted after its create (not timed). Prints median and p95 of each, the
ratios, the targets, and the load average at the start and the end. Every pod it made is deleted at the end
(the raw ones by their label, the product's by this run's instance label), also on failure.

Usage: KUBECONFIG=... python bench/k8s_latency.py [--runs 10] [--exec-runs 50] [--pool 2] [--port 0]
       [--redis-url redis://127.0.0.1:6379/N] [--database-url URL] [--isolate-network on|off] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kubernetes import watch as k8s_watch  # noqa: E402
from kubernetes.stream import stream  # noqa: E402

from bench.docker_latency import (  # noqa: E402  (the same template and REST steps)
    create_once,
    create_session,
    delete_session,
    interleaved,
    stop_product,
    warm_creates,
)
from bench.session_create import Api, free_port, manage  # noqa: E402
from bench.support import latency_figures, print_latency_table, serve  # noqa: E402
from runtime.kubernetes import KubernetesRuntime  # noqa: E402
from runtime.kubernetes.transport import STREAM_LOCK  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = "python-basic"
IMAGE = f"sandbox-template-{TEMPLATE}:latest"
HANDLER = "def handler(event, context):\n    return 1\n"
RAW_LABEL = {"sandbox-bench": "k8s-latency"}


# (ours, raw) pairs the table gives ratios of.
PAIRS = (("cold_create", "raw_create"), ("round_trip", "raw_exec"))


def raw_pod(name: str, pull_policy: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(RAW_LABEL)},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {"name": "main", "image": IMAGE, "imagePullPolicy": pull_policy, "command": ["sleep", "3600"]}
            ],
        },
    }


def watch_running(core: Any, namespace: str, name: str, resource_version: str, timeout: int = 120) -> None:
    watcher = k8s_watch.Watch()
    try:
        for event in watcher.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=timeout,
        ):
            phase = event["object"].status.phase
            if phase == "Running":
                return
            if phase in ("Failed", "Succeeded"):
                raise SystemExit(f"raw pod {name} ended {phase}")
    finally:
        watcher.stop()
    raise SystemExit(f"raw pod {name} did not run within {timeout} s")


def first_session(api: Api) -> None:
    """The first create, not measured: it imports code paths and may find the worker still starting."""
    status, body = api.call("POST", "/api/v1/sessions", {"template_id": TEMPLATE})
    deadline = time.monotonic() + 120
    while status in (200, 201) and body.get("status") == "creating" and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = api.call("GET", f"/api/v1/sessions/{body['id']}")
    if body.get("status") != "running":
        raise SystemExit(f"the first create did not run: {status} {body}")
    delete_session(api, body["id"])


def raw_create(core: Any, namespace: str, pull_policy: str) -> float:
    """Create a bare pod and watch it to Running (ms); it is deleted afterwards (not timed)."""
    name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    pod = core.create_namespaced_pod(namespace, raw_pod(name, pull_policy))
    try:
        watch_running(core, namespace, name, pod.metadata.resource_version)
        return (time.perf_counter() - started) * 1000
    finally:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def raw_exec(stream_core: Any, namespace: str, name: str) -> None:
    with STREAM_LOCK:  # the stream client's request swap is not thread-safe (transport.py)
        resp = stream(
            stream_core.connect_get_namespaced_pod_exec,
            name,
            namespace,
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
    if code != 0:
        raise SystemExit(f"raw exec exited {code}")


def round_trips_and_execs(
    api: Api, core: Any, stream_core: Any, namespace: str, pull_policy: str, trips: int, execs: int
) -> tuple[list[float], list[float]]:
    """Execution round trips through the API, interleaved with raw execs into a running bare pod."""
    name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    pod = core.create_namespaced_pod(namespace, raw_pod(name, pull_policy))
    session = None
    try:
        watch_running(core, namespace, name, pod.metadata.resource_version)
        session = create_session(api)
        path = f"/api/v1/sessions/{session['id']}/execute-sync"

        def round_trip() -> None:
            status, body = api.call("POST", path, {"code": HANDLER, "language": "python", "event": {}})
            if status != 200 or body.get("status") != "completed" or body.get("return_value") != 1:
                raise SystemExit(f"unexpected execution: {status} {body}")

        trip, raw = interleaved(
            [(round_trip, trips), (lambda: raw_exec(stream_core, namespace, name), execs)], warmup=3
        )
        return trip, raw
    finally:
        if session is not None:
            delete_session(api, session["id"])
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def start_product(data_dir: str, instance: str, args: argparse.Namespace) -> tuple[subprocess.Popen, Api]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        {
            "SANDBOX_RUNTIME": "kubernetes",
            "SANDBOX_K8S_IMAGE_PULL_POLICY": args.pull_policy,
            "SANDBOX_K8S_NAMESPACE": args.namespace,
            "SANDBOX_K8S_INSTANCE": instance,
            "SANDBOX_DATA_DIR": data_dir,
            "SANDBOX_MAX_SESSIONS_PER_KEY": "1000",
            "LOG_LEVEL": "WARNING",
        }
    )
    if args.isolate_network:
        env["SANDBOX_K8S_ISOLATE_NETWORK"] = "true" if args.isolate_network == "on" else "false"
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    manage(env, "migrate", "--noinput", "-v0")
    key = manage(env, "create_api_key", "bench", "--staff").strip().splitlines()[-1]
    port = args.port or free_port()
    server = serve(env, data_dir, port)
    api = Api(f"http://127.0.0.1:{port}", key)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if api.call("GET", "/api/v1/health")[0] == 200:
                return server, api
        except (OSError, urllib.error.URLError):
            pass
        if server.poll() is not None:
            break
        time.sleep(0.1)
    stop_product(server)
    raise SystemExit(f"the product did not start; see {data_dir}/serve.log")


def remove_pods(core: Any, namespace: str, instance: str) -> int:
    """Delete this run's pods: the raw ones and the product's (warm ones included); return how many were left."""
    runtime = KubernetesRuntime(namespace=namespace, instance=instance)
    left = 0
    for handle in runtime.list_managed():
        runtime.destroy(handle)
        left += 1
    selector = ",".join(f"{k}={v}" for k, v in RAW_LABEL.items())
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
        left += 1
    return left


def print_table(figures: dict[str, float], args: argparse.Namespace, loads: tuple[float, float]) -> None:
    print(
        f"kubernetes latency on {IMAGE}, {os.cpu_count()} cores: {args.runs} creates of each kind, "
        f"{args.exec_runs} round trips, warm pool of {args.pool}, network container "
        f"{args.isolate_network or 'as configured'}; load average {loads[0]:.2f} at the start, "
        f"{loads[1]:.2f} at the end"
    )
    print_latency_table(
        figures,
        rows=(
            ("raw_exec", "raw: exec python3 -c pass (API)", ""),
            ("raw_create", "raw: pod create to Running (watch)", ""),
            ("cold_create", "ours: cold create-to-running (REST)", "<= 1.2 x raw pod"),
            ("warm_create", "ours: warm create-to-running (REST)", "<= 60 ms"),
            ("round_trip", "ours: execute-sync round trip (REST)", "median <= 30 ms"),
        ),
        ratios=(
            ("cold_create", "raw_create", "cold create / raw pod create"),
            ("round_trip", "raw_exec", "round trip / raw exec"),
        ),
        verdicts={
            "cold create median <= 1.2 x raw pod create": figures["cold_create_vs_raw_create_median"] <= 1.2,
            "warm create median <= 60 ms": figures["warm_create_median_ms"] <= 60,
            "round trip median <= 30 ms": figures["round_trip_median_ms"] <= 30,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="samples of each create (raw, cold, warm)")
    parser.add_argument("--exec-runs", type=int, default=50, help="samples of the execution round trip")
    parser.add_argument("--pool", type=int, default=2, help="warm pool size for the warm creates")
    parser.add_argument("--namespace", default=os.environ.get("SANDBOX_K8S_NAMESPACE", "default"))
    parser.add_argument("--pull-policy", default="Never")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument(
        "--redis-url", default=None, help="serve with this REDIS_URL, e.g. redis://127.0.0.1:6379/13"
    )
    parser.add_argument("--database-url", default=None, help="serve with this DATABASE_URL (default: SQLite)")
    parser.add_argument(
        "--isolate-network",
        choices=("on", "off"),
        default=None,
        help="SANDBOX_K8S_ISOLATE_NETWORK for the product (default: the product's own default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.exec_runs < 1 or args.pool < 1:
        parser.error("--runs, --exec-runs and --pool must be at least 1")

    probe = KubernetesRuntime(namespace=args.namespace)
    probe.check()  # a clear failure when there is no cluster
    core, stream_core = probe.core(), probe.stream_core()
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    data_dir = tempfile.mkdtemp(prefix="bkl-", dir="/tmp")
    load_at_start = os.getloadavg()[0]
    server, api = start_product(data_dir, instance, args)
    try:
        first_session(api)
        raw_create(core, args.namespace, args.pull_policy)
        samples: dict[str, list[float]] = {}
        samples["raw_create"], samples["cold_create"] = interleaved(
            [
                (lambda: raw_create(core, args.namespace, args.pull_policy), args.runs),
                (lambda: create_once(api), args.runs),
            ],
            warmup=1,
        )
        samples["round_trip"], samples["raw_exec"] = round_trips_and_execs(
            api, core, stream_core, args.namespace, args.pull_policy, args.exec_runs, args.runs
        )
        samples["warm_create"] = warm_creates(api, args.runs, args.pool)
    finally:
        stop_product(server)
        left = remove_pods(core, args.namespace, instance)
    figures = latency_figures(samples, PAIRS)
    print_table(figures, args, (load_at_start, os.getloadavg()[0]))
    print(f"pods of this run deleted at the end: {left}; server log: {data_dir}/serve.log")
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
