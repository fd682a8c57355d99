"""Trivial executions per second through the REST API, and what each costs in CPU, at several concurrencies.

For each configuration it serves the real product (`manage.py serve`: uvicorn web processes plus the
django-q2 workers) on a temporary data dir, creates one session per client (up to --sessions; more clients
share them), then runs `POST /api/v1/sessions/<id>/execute-sync` of `def handler(event, context): return 1`
from C client threads (keep-alive connections) for --seconds at each concurrency C, checking every answer
(status completed, return value 1).

Configurations:
  embedded  nothing set: SQLite, the in-process channel layer, the ORM broker
  mariadb   --database-url (MariaDB; the database is created when missing and migrated) and --redis-url

Baseline, in the same run: the executor round trip of the same handler sent straight to a sandbox of the same
runtime (no control plane), one at a time, interleaved with the c=1 requests.

CPU per execution: utime+stime (and reaped children's) of the product's processes over a level, split into
the web processes (uvicorn's), the workers (run_worker and its django-q2 cluster) and the sandboxes (bwrap and
everything under it; for Docker the containers' cgroups), divided by the executions completed.

Usage: python bench/throughput.py [--configs embedded,mariadb] [--concurrency 1,4,16,64] [--seconds 8]
       [--runtime process|docker] [--port N] [--redis-url redis://127.0.0.1:6379/N]
       [--database-url mysql://root@127.0.0.1:3306/bench_throughput] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import ROOT, free_port, percentile, serve  # noqa: E402

HANDLER = "def handler(event, context):\n    return 1\n"
BODY = json.dumps({"language": "python", "code": HANDLER}).encode()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the product ------------------------------------------------------------------------------------------


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def ensure_database(url: str) -> None:
    """Create the MariaDB database of `url` when it does not exist (the bench owns it: migrate runs on it)."""
    from urllib.parse import urlparse

    import MySQLdb

    parts = urlparse(url)
    connection = MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        passwd=parts.password or "",
    )
    name = parts.path.lstrip("/")
    connection.cursor().execute(
        f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    connection.close()


@dataclass
class Product:
    server: subprocess.Popen
    port: int
    key: str
    data_dir: str

    def request(self, connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None):
        connection.request(
            method,
            path,
            body=body,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            status, answer = self.request(
                connection, method, path, json.dumps(body).encode() if body is not None else None
            )
        finally:
            connection.close()
        if status >= 300:
            raise SystemExit(f"{method} {path} answered {status}: {answer}")
        return answer


def start_product(config: str, args: argparse.Namespace) -> Product:
    data_dir = tempfile.mkdtemp(prefix=f"bench-throughput-{config}-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_RUNTIME")}
    env.update(
        {
            "SANDBOX_DATA_DIR": data_dir,
            "SANDBOX_RUNTIME": args.runtime,
            "SANDBOX_MAX_SESSIONS_PER_KEY": "1000",
            "SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER": "1000",
            "LOG_LEVEL": "WARNING",
        }
    )
    if config == "mariadb":
        ensure_database(args.database_url)
        env["DATABASE_URL"] = args.database_url
        env["REDIS_URL"] = args.redis_url
    manage(env, "migrate", "--noinput", "-v0")
    key = manage(env, "create_api_key", f"bench-{uuid.uuid4().hex[:6]}").strip().splitlines()[-1]
    port = args.port or free_port()
    product = Product(serve(env, data_dir, port), port, key, data_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            product.call("GET", "/api/v1/health")
            return product
        except OSError:
            if product.server.poll() is not None:
                break
            time.sleep(0.1)
    stop_product(product)
    raise SystemExit(f"the product did not start; see {data_dir}/serve.log")


def stop_product(product: Product) -> None:
    try:
        os.killpg(product.server.pid, signal.SIGTERM)
        product.server.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(product.server.pid, signal.SIGKILL)
        product.server.wait()


def remove_leftovers(runtime_name: str, data_dir: str) -> None:
    from runtime.registry import backend_class

    runtime: Any = backend_class(runtime_name)(data_dir=data_dir)  # type: ignore[call-arg]
    for handle in runtime.list_managed():
        try:
            runtime.destroy(handle)
        except Exception as exc:  # keep going: the rest must still be removed
            print(f"could not remove sandbox {handle.sandbox_id}: {exc}", file=sys.stderr)
    shutil.rmtree(data_dir, ignore_errors=True)


# --- CPU accounting ---------------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, CPU seconds incl. reaped children, argv[0] basename + argv joined)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = sum(int(value) for value in fields[11:15])
        table[int(entry)] = (int(fields[1]), ticks / CLOCK_TICKS, cmdline)
    return table


def cpu_by_part(root: int, runtime_name: str) -> dict[str, float]:
    """CPU seconds so far of the product under `root`, by part: web, workers, sandboxes."""
    table = _processes()
    parts = {"web": 0.0, "workers": 0.0, "sandboxes": 0.0}

    def part_of(pid: int) -> str | None:
        seen = pid
        found = None
        while seen in table and seen > 1:
            cmdline = table[seen][2]
            if cmdline.split(" ", 1)[0].endswith("bwrap"):
                return "sandboxes"
            if found is None and "uvicorn" in cmdline:
                found = "web"
            if found is None and "run_worker" in cmdline:
                found = "workers"
            if seen == root:
                return found
            seen = table[seen][0]
        return None

    for pid, (_, seconds, _) in table.items():
        part = part_of(pid)
        if part:
            parts[part] += seconds
    if runtime_name == "docker":
        parts["sandboxes"] += _docker_sandbox_cpu()
    return parts


def _docker_sandbox_cpu() -> float:
    out = subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", "label=sandbox.managed=true"],
        capture_output=True,
        text=True,
    ).stdout.split()
    total = 0.0
    for container in out:
        try:
            with open(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/cpu.stat") as handle:
                usage = next(line for line in handle if line.startswith("usage_usec"))
            total += int(usage.split()[1]) / 1e6
        except (OSError, StopIteration):
            continue
    return total


# --- load ---------------------------------------------------------------------------------------------


@dataclass
class Level:
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0


def run_level(
    product: Product, sessions: list[str], concurrency: int, seconds: float, warmup: float
) -> Level:
    level = Level(concurrency)
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)
    measuring = threading.Event()
    stop = threading.Event()

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", product.port, timeout=120)
        path = f"/api/v1/sessions/{sessions[index % len(sessions)]}/execute-sync"
        start_gate.wait()
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status, answer = product.request(connection, "POST", path, BODY)
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", product.port, timeout=120)
                status, answer = 0, {"error": repr(exc)}
            elapsed = (time.perf_counter() - started) * 1000
            if not measuring.is_set():
                continue
            with lock:
                if status == 200 and answer.get("status") == "completed" and answer.get("return_value") == 1:
                    level.latencies.append(elapsed)
                else:
                    level.failures.append(f"{status} {str(answer)[:200]}")
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    time.sleep(warmup)
    before, client_before = cpu_by_part(product.server.pid, RUNTIME[0]), time.process_time()
    started = time.perf_counter()
    measuring.set()
    time.sleep(seconds)
    measuring.clear()
    level.seconds = time.perf_counter() - started
    after, client_after = cpu_by_part(product.server.pid, RUNTIME[0]), time.process_time()
    stop.set()
    for thread in threads:
        thread.join(timeout=150)
    level.cpu = {part: after[part] - before[part] for part in before}
    level.client_cpu = client_after - client_before
    return level


RUNTIME: list[str] = ["process"]


def executor_baseline(runtime_name: str, runs: int) -> list[float]:
    """The same handler straight to a sandbox of the same runtime, no control plane (ms per round trip)."""
    from runtime.base import ExecuteRequest, SandboxSpec
    from runtime.events import ExecutionResult
    from runtime.registry import backend_class

    data_dir = tempfile.mkdtemp(prefix="bench-throughput-executor-", dir="/tmp")
    runtime: Any = backend_class(runtime_name)(data_dir=data_dir)  # type: ignore[call-arg]
    image = "python-basic" if runtime_name == "process" else "sandbox-template-python-basic:latest"
    handle = runtime.create(
        SandboxSpec(session_id=f"bench-{uuid.uuid4().hex[:8]}", image=image, token=uuid.uuid4().hex)
    )
    samples = []
    try:
        client = runtime.executor(handle)
        for index in range(runs + 10):
            started = time.perf_counter()
            result = None
            for event in client.execute(
                ExecuteRequest(
                    execution_id=uuid.uuid4().hex, language="python", code=HANDLER, event={}, timeout=10
                )
            ):
                result = event
            if not isinstance(result, ExecutionResult) or result.return_value != 1:
                raise SystemExit(f"the executor answered {result}")
            if index >= 10:
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        runtime.destroy(handle)
        shutil.rmtree(data_dir, ignore_errors=True)
    return samples


def bench_config(config: str, args: argparse.Namespace) -> dict[str, float]:
    product = start_product(config, args)
    figures: dict[str, float] = {}
    try:
        count = min(max(args.concurrency), args.sessions)
        sessions = [
            product.call("POST", "/api/v1/sessions", {"template_id": "python-basic", "timeout": 3600})["id"]
            for _ in range(count)
        ]
        print(
            f"\n{config}: {args.runtime} runtime, {count} sessions, "
            f"{args.seconds:.0f} s per level after {args.warmup:.0f} s of warm-up"
        )
        print(
            f"{'concurrency':>11}{'exec/s':>9}{'median ms':>11}{'p95 ms':>9}{'web ms':>9}{'workers ms':>11}"
            f"{'sandbox ms':>11}{'client ms':>10}{'failed':>8}{'load':>6}"
        )
        for concurrency in args.concurrency:
            level = run_level(product, sessions, concurrency, args.seconds, args.warmup)
            done = len(level.latencies)
            if not done:
                raise SystemExit(
                    f"{config} c={concurrency}: nothing completed; failures: {level.failures[:3]}"
                )
            per = {part: level.cpu[part] * 1000 / done for part in level.cpu}
            rate = done / level.seconds
            load = os.getloadavg()[0]
            print(
                f"{concurrency:>11}{rate:>9.1f}{statistics.median(level.latencies):>11.1f}"
                f"{percentile(level.latencies, 0.95):>9.1f}{per['web']:>9.2f}{per['workers']:>11.2f}"
                f"{per['sandboxes']:>11.2f}{level.client_cpu * 1000 / done:>10.2f}{len(level.failures):>8}"
                f"{load:>6.1f}"
            )
            for failure in level.failures[:3]:
                print(f"{'':>11}failure: {failure}")
            prefix = f"{config}_c{concurrency}"
            figures[f"{prefix}_per_second"] = rate
            figures[f"{prefix}_median_ms"] = statistics.median(level.latencies)
            figures[f"{prefix}_p95_ms"] = percentile(level.latencies, 0.95)
            for part, value in per.items():
                figures[f"{prefix}_{part}_cpu_ms"] = value
            figures[f"{prefix}_failures"] = len(level.failures)
    finally:
        stop_product(product)
        shutil.copy(os.path.join(product.data_dir, "serve.log"), f"/tmp/bench-throughput-{config}.log")
        remove_leftovers(args.runtime, product.data_dir)
    return figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="embedded,mariadb")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each level")
    parser.add_argument("--sessions", type=int, default=16, help="at most this many sessions (clients share)")
    parser.add_argument("--baseline-runs", type=int, default=100)
    parser.add_argument("--runtime", choices=("process", "docker"), default="process")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="for the mariadb config")
    parser.add_argument(
        "--database-url",
        default="mysql://root@127.0.0.1:3306/bench_throughput",
        help="for the mariadb config; created when missing",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    unknown = set(args.configs) - {"embedded", "mariadb"}
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RUNTIME[0] = args.runtime
    if args.runtime == "process" and shutil.which("bwrap") is None:
        raise SystemExit("bubblewrap (bwrap) is not installed; the process runtime needs it")
    load_before = os.getloadavg()
    print(
        f"throughput through the REST API on {os.cpu_count()} cores; load average {load_before[0]:.2f} "
        f"{load_before[1]:.2f} {load_before[2]:.2f} at the start"
    )
    figures: dict[str, float] = {}
    baseline = executor_baseline(args.runtime, args.baseline_runs)
    figures["executor_median_ms"] = statistics.median(baseline)
    figures["executor_p95_ms"] = percentile(baseline, 0.95)
    print(
        f"baseline: executor round trip, {args.runtime} sandbox, no control plane: "
        f"median {figures['executor_median_ms']:.1f} ms, p95 {figures['executor_p95_ms']:.1f} ms"
    )
    for config in args.configs:
        figures.update(bench_config(config, args))
    load_after = os.getloadavg()
    figures["load_start"], figures["load_end"] = load_before[0], load_after[0]
    print("\nthe servers' logs: /tmp/bench-throughput-<config>.log")
    print(f"load average at the end {load_after[0]:.2f}; CPU columns: ms per execution")
    for config in args.configs:
        if 16 in args.concurrency:
            rate = figures[f"{config}_c16_per_second"]
            print(
                f"{'met' if rate >= 100 else 'MISSED':<7} {config}: >= 100 executions/s at concurrency 16 "
                f"({rate:.0f})"
            )
        if 1 in args.concurrency:
            median, web = figures[f"{config}_c1_median_ms"], figures[f"{config}_c1_web_cpu_ms"]
            limit = 15 if args.runtime == "process" else 20
            print(
                f"{'met' if median <= limit else 'MISSED':<7} {config}: execute-sync median <= {limit} ms "
                f"({median:.1f})"
            )
            print(f"{'met' if web <= 8 else 'MISSED':<7} {config}: web CPU per execution <= 8 ms ({web:.1f})")
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
