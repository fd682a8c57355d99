"""E2B SDK latency against our /e2b surface: the unmodified `e2b-code-interpreter` SDK, as an agent runs it.

Through the real product (`manage.py serve`: uvicorn + the workers) on a temporary data dir:
  create to first result (cold)   `Sandbox.create()` then `run_code("1 + 1")` until its result is back,
                                  warm pool empty: what ComputeSDK calls time to interactive;
  create to first result (warm)   the same with the template's warm pool filled (the bench waits for the pool
                                  to be full again before each create, so the refill is not measured);
  run_code round trip             `run_code("1 + 1")` on a running sandbox, until its result is back;
  commands.run round trip         `commands.run("true")` on a running sandbox, until its exit code is back.
Each sandbox is killed after its measurement (not timed). Published for comparison (ComputeSDK's
time-to-interactive benchmark): E2B 491 ms, Daytona 186 ms; different machines and networks, so a reference,
not a like-for-like race.

Usage: python bench/e2b_latency.py [--runs 20] [--exec-runs 50] [--pool 2] [--runtime process|docker]
       [--port N] [--redis-url redis://127.0.0.1:6379/N] [--database-url mysql://...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.docker_latency import stop_product  # noqa: E402
from bench.session_create import Api, free_port, manage, wait_pool  # noqa: E402
from bench.support import percentile, serve  # noqa: E402
from runtime.base import RuntimeFailure  # noqa: E402

TEMPLATE = "python-basic"
PUBLISHED_TTI_MS = {"E2B": 491.0, "Daytona": 186.0}


def start_product(data_dir: str, args: argparse.Namespace) -> tuple[subprocess.Popen, Api, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("E2B_")
    }
    env.update(
        {
            "SANDBOX_RUNTIME": args.runtime,
            "SANDBOX_DATA_DIR": data_dir,
            "SANDBOX_MAX_SESSIONS_PER_KEY": "1000",
            "LOG_LEVEL": "WARNING",
        }
    )
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    manage(env, "migrate", "--noinput", "-v0")
    key = manage(env, "create_api_key", "bench-e2b", "--staff").strip().splitlines()[-1]
    port = args.port or free_port()
    server = serve(env, data_dir, port)
    api = Api(f"http://127.0.0.1:{port}", key)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if api.call("GET", "/api/v1/health")[0] == 200:
                return server, api, key
        except OSError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.1)
    stop_product(server)
    raise SystemExit(f"the product did not start; see {data_dir}/serve.log")


def remove_leftovers(data_dir: str, runtime_name: str) -> None:
    """Destroy what the product left running (warm sandboxes, their workspace mounts), then the data dir."""
    from runtime.docker import DockerRuntime
    from runtime.process import ProcessRuntime

    runtime = (
        DockerRuntime(data_dir=data_dir) if runtime_name == "docker" else ProcessRuntime(data_dir=data_dir)
    )
    try:
        for handle in runtime.list_managed():
            runtime.destroy(handle)
    except RuntimeFailure as exc:
        print(f"warning: sandboxes of {data_dir} may be left behind: {exc.message}", file=sys.stderr)
        return
    shutil.rmtree(data_dir, ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="samples of each create measurement")
    parser.add_argument("--exec-runs", type=int, default=50, help="samples of each round trip")
    parser.add_argument("--pool", type=int, default=2, help="warm pool size for the warm creates")
    parser.add_argument("--runtime", choices=("process", "docker"), default="process")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument("--redis-url", default=None, help="serve with this REDIS_URL (default: none)")
    parser.add_argument("--database-url", default=None, help="serve with this DATABASE_URL (default: SQLite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.exec_runs < 1 or args.pool < 1:
        parser.error("--runs, --exec-runs and --pool must be at least 1")

    data_dir = tempfile.mkdtemp(prefix="be2b-", dir="/tmp")
    load_at_start = os.getloadavg()[0]
    server, api, key = start_product(data_dir, args)
    url = f"{api.base}/e2b"
    os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key)
    from e2b_code_interpreter import Sandbox

    def create_to_first_result() -> float:
        started = time.perf_counter()
        sandbox = Sandbox.create(template=TEMPLATE)
        result = sandbox.run_code("1 + 1")
        elapsed = (time.perf_counter() - started) * 1000
        sandbox.kill()
        if result.text != "2":
            raise SystemExit(f"unexpected run_code answer: {result}")
        return elapsed

    samples: dict[str, list[float]] = {}
    try:
        create_to_first_result()  # the first requests import code paths; not measured
        samples["cold_create_to_first_result"] = [create_to_first_result() for _ in range(args.runs)]
        sandbox = Sandbox.create(template=TEMPLATE)
        try:
            for _ in range(3):
                sandbox.run_code("1 + 1")
                sandbox.commands.run("true")
            samples["run_code_round_trip"] = [
                timed(lambda: sandbox.run_code("1 + 1")) for _ in range(args.exec_runs)
            ]
            samples["commands_run_round_trip"] = [
                timed(lambda: sandbox.commands.run("true")) for _ in range(args.exec_runs)
            ]
        finally:
            sandbox.kill()
        status, body = api.call("PATCH", f"/api/v1/templates/{TEMPLATE}", {"warm_pool_size": args.pool})
        if status != 200:
            raise SystemExit(f"cannot set the warm pool size: {status} {body}")
        try:
            warm = []
            for _ in range(args.runs):
                wait_pool(api, TEMPLATE, args.pool, timeout=120)
                warm.append(create_to_first_result())
            samples["warm_create_to_first_result"] = warm
        finally:
            api.call("PATCH", f"/api/v1/templates/{TEMPLATE}", {"warm_pool_size": 0})
    finally:
        stop_product(server)
        remove_leftovers(data_dir, args.runtime)

    figures: dict[str, float] = {}
    for name, values in samples.items():
        figures[f"{name}_median_ms"] = statistics.median(values)
        figures[f"{name}_p95_ms"] = percentile(values, 0.95)
    for vendor, published in PUBLISHED_TTI_MS.items():
        figures[f"published_{vendor.lower()}_tti_ms"] = published
    load_at_end = os.getloadavg()[0]
    print(
        f"E2B SDK against /e2b, {args.runtime} runtime, {os.cpu_count()} cores: {args.runs} creates each, "
        f"{args.exec_runs} round trips; {'MariaDB' if args.database_url else 'SQLite'}"
        f"{' + Redis' if args.redis_url else ''}; load average {load_at_start:.1f} at the start, "
        f"{load_at_end:.1f} at the end"
    )
    rows = (
        ("cold_create_to_first_result", "create to first run_code result (cold)"),
        ("warm_create_to_first_result", "create to first run_code result (warm pool)"),
        ("run_code_round_trip", "run_code('1 + 1') round trip"),
        ("commands_run_round_trip", "commands.run('true') round trip"),
    )
    print(f"{'measurement':<46}{'median ms':>11}{'p95 ms':>11}")
    for name, label in rows:
        print(f"{label:<46}{figures[name + '_median_ms']:>11.1f}{figures[name + '_p95_ms']:>11.1f}")
    print(
        "published time to interactive (ComputeSDK): "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in PUBLISHED_TTI_MS.items())
    )
    if args.json:
        figures["load_average_start"], figures["load_average_end"] = load_at_start, load_at_end
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
