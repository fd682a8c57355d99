"""Session create-to-running latency through the REST API: cold (empty pool) against warm (pool filled).

Starts the real product (uvicorn + a django-q2 worker, `manage.py serve`) on a temporary data dir with the
process runtime under bubblewrap, then times `POST /api/v1/sessions` until it answers with a running session.
Cold: the pool is empty, a worker builds the sandbox. Warm: `python-basic` keeps a warm pool; between
creates the bench waits for the pool to refill, so each create finds a ready sandbox (the refill itself is
not what is measured). Each session is deleted after its create.

With --busy-tenant N, a last row: another owner first starts N executions that run until the end of the bench,
then each sample is one create (cold) plus one async execution, until its result reads completed; the
provisioning queue and the execution stream pool must serve the second owner while the first holds its runs.

Usage: python bench/session_create.py [--runs 50] [--pool 4] [--busy-tenant 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.support import free_port, percentile, serve  # noqa: E402  (re-exported to the other benches)


class Api:
    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def wait_pool(api: Api, template: str, ready: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, health = api.call("GET", "/api/v1/health/detailed")
        if health.get("warm_pools", {}).get(template, {}).get("ready", 0) >= ready:
            return
        time.sleep(0.05)
    raise SystemExit(f"the warm pool of {template} did not reach {ready} ready sandboxes")


def create_once(api: Api) -> float:
    started = time.perf_counter()
    status, body = api.call("POST", "/api/v1/sessions", {"template_id": "python-basic"})
    elapsed = (time.perf_counter() - started) * 1000
    if status != 201 or body.get("status") != "running":
        raise SystemExit(f"create failed: {status} {body}")
    api.call("DELETE", f"/api/v1/sessions/{body['id']}")
    return elapsed


# Runs until a file named `go` appears in its workspace: never, in this bench; the session's end stops it.
HELD_RUN = "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.2)\n"


def create_and_first_result(api: Api) -> float:
    """One create plus one async execution, until its result reads completed (ms)."""
    started = time.perf_counter()
    status, body = api.call("POST", "/api/v1/sessions", {"template_id": "python-basic"})
    if status != 201 or body.get("status") != "running":
        raise SystemExit(f"create failed: {status} {body}")
    code = "def handler(event):\n    return 1"
    status, run = api.call(
        "POST", f"/api/v1/sessions/{body['id']}/execute", {"language": "python", "code": code}
    )
    if status != 201:
        raise SystemExit(f"execute failed: {status} {run}")
    while True:
        _, result = api.call("GET", f"/api/v1/executions/{run['execution_id']}")
        if result["status"] not in ("pending", "running"):
            break
        time.sleep(0.02)
    elapsed = (time.perf_counter() - started) * 1000
    if result["status"] != "completed":
        raise SystemExit(f"the execution ended {result['status']}: {result}")
    api.call("DELETE", f"/api/v1/sessions/{body['id']}")
    return elapsed


def hold_runs(api: Api, count: int) -> str:
    """A session of the busy owner with `count` executions running; its id."""
    status, body = api.call("POST", "/api/v1/sessions", {"template_id": "python-basic", "timeout": 3600})
    if status != 201 or body.get("status") != "running":
        raise SystemExit(f"the busy owner's create failed: {status} {body}")
    ids = []
    for _ in range(count):
        status, run = api.call(
            "POST",
            f"/api/v1/sessions/{body['id']}/execute",
            {"language": "python", "code": HELD_RUN, "timeout": 3600},
        )
        if status != 201:
            raise SystemExit(f"the busy owner's execute failed: {status} {run}")
        ids.append(run["execution_id"])
    deadline = time.monotonic() + 120
    while sum(api.call("GET", f"/api/v1/executions/{i}")[1]["status"] == "running" for i in ids) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the busy owner's {count} runs did not all start")
        time.sleep(0.2)
    return body["id"]


def remove_sandboxes(data_dir: str) -> None:
    """Destroy what the server left (warm sandboxes): their mounts, loop devices and uids outlive a rmtree."""
    sys.path.insert(0, ROOT)
    from runtime.process import ProcessRuntime

    runtime = ProcessRuntime(data_dir=data_dir)
    for handle in runtime.list_managed():
        try:
            runtime.destroy(handle)
        except Exception as exc:  # keep going: the rest must still be removed
            print(f"could not remove sandbox {handle.sandbox_id}: {exc}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument(
        "--busy-tenant",
        type=int,
        default=0,
        metavar="N",
        help="also time create + first result while another owner holds N running executions",
    )
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="serve with this REDIS_URL, e.g. redis://127.0.0.1:6379/13 (default: embedded)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        raise SystemExit("bubblewrap (bwrap) is not installed; the process runtime needs it")

    data_dir = tempfile.mkdtemp(prefix="bench-create-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_RUNTIME")}
    env.update({"SANDBOX_DATA_DIR": data_dir, "SANDBOX_MAX_SESSIONS_PER_KEY": "1000", "LOG_LEVEL": "WARNING"})
    env["SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER"] = str(max(16, args.busy_tenant))
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    manage(env, "migrate", "--noinput", "-v0")
    key = manage(env, "create_api_key", "bench", "--staff").strip().splitlines()[-1]
    busy_key = manage(env, "create_api_key", "bench-busy").strip().splitlines()[-1]
    port = args.port or free_port()
    load_before = os.getloadavg()
    server = serve(env, data_dir, port)
    api = Api(f"http://127.0.0.1:{port}", key)
    try:
        for _ in range(300):
            try:
                if api.call("GET", "/api/v1/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        for _ in range(3):
            create_once(api)  # warm-up: first requests import code paths
        cold = [create_once(api) for _ in range(args.runs)]
        api.call("PATCH", "/api/v1/templates/python-basic", {"warm_pool_size": args.pool})
        warm = []
        for _ in range(args.runs):
            wait_pool(api, "python-basic", args.pool)
            warm.append(create_once(api))
        api.call("PATCH", "/api/v1/templates/python-basic", {"warm_pool_size": 0})
        busy: list[float] = []
        if args.busy_tenant:
            busy_api = Api(api.base, busy_key)
            held = hold_runs(busy_api, args.busy_tenant)
            try:
                busy = [create_and_first_result(api) for _ in range(args.runs)]
            finally:
                busy_api.call("POST", f"/api/v1/sessions/{held}/terminate")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        remove_sandboxes(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    load_after = os.getloadavg()

    figures = {
        "cold_median_ms": statistics.median(cold),
        "cold_p95_ms": percentile(cold, 0.95),
        "warm_median_ms": statistics.median(warm),
        "warm_p95_ms": percentile(warm, 0.95),
    }
    print(f"session create-to-running through the REST API, process runtime, {args.runs} sessions each")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'':<28}{'median ms':>12}{'p95 ms':>12}")
    print(f"{'cold (empty pool)':<28}{figures['cold_median_ms']:>12.1f}{figures['cold_p95_ms']:>12.1f}")
    print(
        f"{'warm (pool of ' + str(args.pool) + ')':<28}{figures['warm_median_ms']:>12.1f}{figures['warm_p95_ms']:>12.1f}"
    )
    print(f"{'warm / cold':<28}{figures['warm_median_ms'] / figures['cold_median_ms']:>12.2f}")
    if busy:
        figures["busy_median_ms"] = statistics.median(busy)
        figures["busy_p95_ms"] = percentile(busy, 0.95)
        print(
            f"create + first async result while another owner holds {args.busy_tenant} runs"
            f" (cold create, execution until completed):"
        )
        print(f"{'busy tenant':<28}{figures['busy_median_ms']:>12.1f}{figures['busy_p95_ms']:>12.1f}")
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
