"""Docker runtime latency against raw Docker, in one run, on one image (sandbox-template-python-basic:latest).

Raw baselines, with the docker CLI:
  docker exec   `docker exec <c> python3 -c pass` against a running container of the image;
  docker run    `docker run --rm <image> python3 -c pass` (create, start, wait, remove).
Ours, through the REST API of the real product (`manage.py serve`: uvicorn + a django-q2 worker) started on a
temporary data dir with SANDBOX_RUNTIME=docker:
  cold create   `POST /api/v1/sessions` until it answers with a running session, warm pool empty;
  warm create   the same with the template's warm pool filled (the bench waits for the pool to be full again
                before each create, so the refill itself is not what is measured);
  round trip    `POST /api/v1/sessions/<id>/execute-sync` of `def handler(event, context): return 1` on a
                running session, until the finished execution comes back.
Each ratio compares samples taken alternately (a docker run, a cold create, a docker run ...; round trips
spread evenly between the docker execs), with the product running throughout: a busy host then slows both
sides of a ratio alike instead of whichever phase it happened to hit. Each session is deleted after its
create (not timed).

Usage: python bench/docker_latency.py [--runs 30] [--exec-runs 100] [--pool 2] [--port N]
       [--redis-url redis://127.0.0.1:6379/N] [--database-url mysql://...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.session_create import Api, free_port, manage, wait_pool  # noqa: E402
from bench.support import latency_figures, print_latency_table, serve  # noqa: E402
from runtime.base import RuntimeFailure  # noqa: E402
from runtime.docker import DockerRuntime  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = "python-basic"
IMAGE = f"sandbox-template-{TEMPLATE}:latest"
HANDLER = "def handler(event, context):\n    return 1\n"


Measure = Callable[[], float | None]


# (ours, raw) pairs the table gives ratios of.
PAIRS = (("cold_create", "docker_run"), ("round_trip", "docker_exec"))


def interleaved(measures: list[tuple[Measure, int]], warmup: int) -> list[list[float]]:
    """Call each function its number of times, the calls of all spread evenly over one schedule.

    Returns the samples of each, in ms: what the function returned, when it timed itself (a create that
    must not count the delete after it), else the call's wall time. `warmup` untimed rounds come first.
    """
    for _ in range(warmup):
        for fn, _count in measures:
            fn()
    # Equal counts take turns going first, so neither always follows the other's leftovers.
    slots = sorted(
        ((i + 0.5) / count, (k + i) % len(measures), k)
        for k, (_, count) in enumerate(measures)
        for i in range(count)
    )
    samples: list[list[float]] = [[] for _ in measures]
    for _, _, k in slots:
        started = time.perf_counter()
        own = measures[k][0]()
        samples[k].append(own if own is not None else (time.perf_counter() - started) * 1000)
    return samples


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def raw_run() -> None:
    docker("run", "--rm", IMAGE, "python3", "-c", "pass")


def raw_exec(container: str) -> None:
    docker("exec", container, "python3", "-c", "pass")


def create_session(api: Api) -> dict:
    status, body = api.call("POST", "/api/v1/sessions", {"template_id": TEMPLATE})
    if status != 201 or body.get("status") != "running":
        raise SystemExit(f"create failed: {status} {body}")
    return body


def delete_session(api: Api, session_id: str) -> None:
    status, body = api.call("DELETE", f"/api/v1/sessions/{session_id}")
    if status != 204:
        raise SystemExit(f"delete of {session_id} failed: {status} {body}")


def create_once(api: Api) -> float:
    started = time.perf_counter()
    body = create_session(api)
    elapsed = (time.perf_counter() - started) * 1000
    delete_session(api, body["id"])
    return elapsed


def warm_creates(api: Api, runs: int, pool: int) -> list[float]:
    status, body = api.call("PATCH", f"/api/v1/templates/{TEMPLATE}", {"warm_pool_size": pool})
    if status != 200:
        raise SystemExit(f"cannot set the warm pool size: {status} {body}")
    samples = []
    try:
        for _ in range(runs):
            wait_pool(api, TEMPLATE, pool, timeout=120)
            samples.append(create_once(api))
    finally:
        api.call("PATCH", f"/api/v1/templates/{TEMPLATE}", {"warm_pool_size": 0})
    return samples


def round_trips_and_execs(api: Api, trips: int, execs: int) -> tuple[list[float], list[float]]:
    """Execution round trips through the API, interleaved with raw `docker exec`s into a running container."""
    container = docker("run", "-d", "--rm", "--network", "none", IMAGE, "sleep", "infinity")
    session = create_session(api)
    path = f"/api/v1/sessions/{session['id']}/execute-sync"

    def round_trip() -> None:
        status, body = api.call("POST", path, {"code": HANDLER, "language": "python", "event": {}})
        if status != 200 or body.get("status") != "completed" or body.get("return_value") != 1:
            raise SystemExit(f"unexpected execution: {status} {body}")

    try:
        trip, raw = interleaved(
            [(round_trip, trips), (lambda: raw_exec(container), execs)],
            warmup=3,
        )
        return trip, raw
    finally:
        delete_session(api, session["id"])
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def start_product(data_dir: str, args: argparse.Namespace) -> tuple[subprocess.Popen, Api]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        {
            "SANDBOX_RUNTIME": "docker",
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


def stop_product(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def remove_leftovers(data_dir: str) -> None:
    """Destroy what the product left running (warm sandboxes): containers, workspace mounts, then the dir."""
    runtime = DockerRuntime(data_dir=data_dir)
    try:
        for handle in runtime.list_managed():
            runtime.destroy(handle)
    except RuntimeFailure as exc:
        print(f"warning: sandboxes of {data_dir} may be left behind: {exc.message}", file=sys.stderr)
        return
    shutil.rmtree(data_dir, ignore_errors=True)


def print_table(figures: dict[str, float], args: argparse.Namespace, loads: tuple[float, float]) -> None:
    print(
        f"docker latency on {IMAGE}, {os.cpu_count()} cores: {args.runs} runs each "
        f"({args.exec_runs} round trips), warm pool of {args.pool}; "
        f"{'MariaDB' if args.database_url else 'SQLite'}{' + Redis' if args.redis_url else ''}; "
        f"load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end"
    )
    print_latency_table(
        figures,
        rows=(
            ("docker_exec", "raw: docker exec <c> python3 -c pass", ""),
            ("docker_run", "raw: docker run --rm <image> python3 -c pass", ""),
            ("cold_create", "ours: cold create-to-running (API)", "<= 1.2 x docker run"),
            ("warm_create", "ours: warm create-to-running (API)", "<= 50 ms"),
            ("round_trip", "ours: execute-sync round trip (API)", "median <= 20 ms"),
        ),
        ratios=(
            ("cold_create", "docker_run", "cold create / docker run"),
            ("round_trip", "docker_exec", "round trip / docker exec"),
        ),
        verdicts={
            "round trip median <= 20 ms": figures["round_trip_median_ms"] <= 20,
            "warm create median <= 50 ms": figures["warm_create_median_ms"] <= 50,
            "cold create median <= 1.2 x docker run": figures["cold_create_vs_docker_run_median"] <= 1.2,
        },
        width=48,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="samples of each docker measurement")
    parser.add_argument("--exec-runs", type=int, default=100, help="samples of the execution round trip")
    parser.add_argument("--pool", type=int, default=2, help="warm pool size for the warm creates")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="serve with this REDIS_URL, e.g. redis://127.0.0.1:6379/8 (default: none)",
    )
    parser.add_argument("--database-url", default=None, help="serve with this DATABASE_URL (default: SQLite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.exec_runs < 1 or args.pool < 1:
        parser.error("--runs, --exec-runs and --pool must be at least 1")
    if shutil.which("docker") is None:
        raise SystemExit("the docker CLI is not installed (see .ci/docker-setup.sh)")
    try:
        docker("image", "inspect", "--format", "{{.Id}}", IMAGE)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"{IMAGE} is not available ({exc.stderr.strip()}); build it with images/build.sh"
        ) from None

    # Short: the executor's socket path, <data>/docker/<session>/run/executor.sock, must fit in sun_path.
    data_dir = tempfile.mkdtemp(prefix="bdl-", dir="/tmp")
    load_at_start = os.getloadavg()[0]  # a busy host slows everything here; the table says how busy
    server, api = start_product(data_dir, args)
    try:
        create_once(api)  # the first requests import code paths; not measured
        samples: dict[str, list[float]] = {}
        samples["docker_run"], samples["cold_create"] = interleaved(
            [(raw_run, args.runs), (lambda: create_once(api), args.runs)], warmup=2
        )
        samples["round_trip"], samples["docker_exec"] = round_trips_and_execs(api, args.exec_runs, args.runs)
        samples["warm_create"] = warm_creates(api, args.runs, args.pool)
    finally:
        stop_product(server)
        remove_leftovers(data_dir)
    figures = latency_figures(samples, PAIRS)
    print_table(figures, args, (load_at_start, os.getloadavg()[0]))
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
