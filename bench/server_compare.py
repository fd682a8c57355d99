"""daphne against uvicorn, in the same run: request latency, and web memory while 300 MiB bodies are refused.

Each server runs in turn on the same fresh data dir (SQLite, the embedded default, web processes only):
  daphne       `python -m daphne sandbox_site.asgi:application`, one process (what `serve` ran before)
  uvicorn      `manage.py serve --no-workers --web-workers 1`
  uvicorn xN   `manage.py serve --no-workers` with N = SANDBOX_WEB_WORKERS web processes (one per core), when N > 1

For each: --requests timed requests of GET /api/v1/health and of an authenticated POST
/api/v1/sessions/<id>/keepalive (API key lookup, a session row read and written), from --concurrency
clients on keep-alive connections, after a warm-up; then --bodies clients at once each announce a 300 MiB
POST without credentials and send it until the server closes the connection, while the resident memory of
the server's processes (VmRSS, /proc) is sampled. A server that buffers bodies is stopped from growing past
--memory-cap MiB: its clients stop sending there.

Usage: python bench/server_compare.py [--requests 500] [--concurrency 1] [--bodies 10] [--port 0]
                                      [--redis-url URL] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import free_port, percentile  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
BODY = 300 * MIB
SESSION_ID = "bench-keepalive"


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def web_pids(root: int) -> list[int]:
    """The web server's own processes: daphne's, or uvicorn's supervisor and workers (not `serve` itself)."""
    for pid in process_tree(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"uvicorn" in cmdline or b"daphne" in cmdline:
            return process_tree(pid)
    return [root]


def prepare(env: dict[str, str]) -> str:
    """Migrate the data dir, make the bench user's key and a running session row for keepalive."""

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"manage.py {args[0]} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    manage("migrate", "--noinput", "-v0")
    key = manage("create_api_key", "bench").strip().splitlines()[-1]
    manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; from sessions_app.models import SandboxSession; "
        "from templates_app.models import SandboxTemplate; "
        f"SandboxSession.objects.create(id='{SESSION_ID}', owner=User.objects.get(username='bench'), "
        "template=SandboxTemplate.objects.get(pk='python-basic'), status='running')",
    )
    return key


@contextmanager
def server(name: str, command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[int]:
    """Start one server, wait for /health; yields the pid whose tree holds it."""
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/api/v1/health")
                if connection.getresponse().status == 200:
                    connection.close()
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in process_tree(process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()


def timed_requests(
    port: int, method: str, path: str, headers: dict[str, str], count: int, concurrency: int
) -> list[float]:
    """`count` requests from `concurrency` threads, each on its own keep-alive connection; ms each."""
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def client(share: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(share):
            started = time.perf_counter()
            connection.request(method, path, body=b"" if method == "POST" else None, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                failures.append(f"{method} {path}: {response.status}")
                break
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [
        threading.Thread(target=client, args=(count // concurrency + (i < count % concurrency),))
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"requests failed: {failures[:3]}")
    return latencies


def refused_bodies(port: int, pids: list[int], clients: int, cap: int) -> dict[str, float]:
    """`clients` anonymous 300 MiB POSTs at once; peak memory growth, memory after, MiB each one sent."""
    baseline = rss(pids)
    peak = baseline
    over_cap = threading.Event()
    done = threading.Event()
    sent = [0] * clients

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss(pids))
            if peak - baseline > cap:
                over_cap.set()
            time.sleep(0.02)

    def client(index: int) -> None:
        block = b"x" * MIB
        try:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(
                    b"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {BODY}\r\n\r\n".encode()
                )
                while sent[index] < BODY and not over_cap.is_set():
                    sock.sendall(block)
                    sent[index] += len(block)
        except OSError:
            pass  # the server closed the connection: refused

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    time.sleep(2)  # what stays resident once the requests are over
    done.set()
    sampler.join()
    return {
        "rss_before_mib": baseline / MIB,
        "peak_growth_mib": (peak - baseline) / MIB,
        "growth_after_mib": (rss(pids) - baseline) / MIB,
        "sent_median_mib": statistics.median(sent) / MIB,
        "refused_in_s": elapsed,
        "capped": float(over_cap.is_set()),
    }


def measure(name: str, port: int, root: int, key: str, args: argparse.Namespace) -> dict[str, float]:
    pids = web_pids(root)
    auth = {"Authorization": f"Bearer {key}"}
    keepalive = f"/api/v1/sessions/{SESSION_ID}/keepalive"
    for _ in range(max(1, args.requests // 10)):  # warm-up: imports, connections, caches
        timed_requests(port, "GET", "/api/v1/health", {}, 1, 1)
        timed_requests(port, "POST", keepalive, auth, 1, 1)
    health = timed_requests(port, "GET", "/api/v1/health", {}, args.requests, args.concurrency)
    post = timed_requests(port, "POST", keepalive, auth, args.requests, args.concurrency)
    figures = {
        "health_median_ms": statistics.median(health),
        "health_p95_ms": percentile(health, 0.95),
        "keepalive_median_ms": statistics.median(post),
        "keepalive_p95_ms": percentile(post, 0.95),
        "processes": float(len(pids)),
    }
    figures.update(refused_bodies(port, web_pids(root), args.bodies, args.memory_cap * MIB))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500, help="timed requests per endpoint and server")
    parser.add_argument("--concurrency", type=int, default=1, help="clients sending them at once")
    parser.add_argument("--bodies", type=int, default=10, help="300 MiB bodies sent at once")
    parser.add_argument("--memory-cap", type=int, default=2048, help="MiB of growth where clients stop")
    parser.add_argument("--port", type=int, default=0, help="port for each server in turn (0: a free one)")
    parser.add_argument("--redis-url", default=None, help="serve with this REDIS_URL (default: embedded)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="scp-bench-srv-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_RUNTIME")}
    env.update(
        SANDBOX_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="sandbox_site.settings",
        LOG_LEVEL="WARNING",
        SANDBOX_MAX_SESSIONS_PER_KEY="1000",
    )
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    cores = len(os.sched_getaffinity(0))
    web_workers = int(env.get("SANDBOX_WEB_WORKERS") or cores)
    port = args.port or free_port()
    serve = [sys.executable, "manage.py", "serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port)]
    servers = {
        "daphne": [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "sandbox_site.asgi:application",
        ],
        "uvicorn": [*serve, "--web-workers", "1"],
    }
    if web_workers > 1:
        servers[f"uvicorn x{web_workers}"] = [*serve, "--web-workers", str(web_workers)]

    loads = [os.getloadavg()[0]]
    results: dict[str, dict[str, float]] = {}
    try:
        key = prepare(env)
        for name, command in servers.items():
            with server(name, command, env, port, data_dir / f"{name.replace(' ', '-')}.log") as root:
                results[name] = measure(name, port, root, key, args)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    loads.append(os.getloadavg()[0])

    print(
        f"daphne against uvicorn, {cores} cores, {args.requests} requests per endpoint from {args.concurrency} "
        f"client(s); {args.bodies} x 300 MiB anonymous POSTs at once; "
        f"load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end"
    )
    print(
        f"{'server':<12}{'procs':>6}{'health med':>12}{'p95':>8}{'keepalive med':>15}{'p95':>8}"
        f"{'rss MiB':>9}{'peak +MiB':>11}{'after +MiB':>12}{'sent MiB':>10}{'refused s':>11}"
    )
    figures: dict[str, float] = {"cores": cores, "load_start": loads[0], "load_end": loads[1]}
    for name, result in results.items():
        capped = " (capped: clients stopped)" if result["capped"] else ""
        print(
            f"{name:<12}{result['processes']:>6.0f}{result['health_median_ms']:>12.2f}{result['health_p95_ms']:>8.2f}"
            f"{result['keepalive_median_ms']:>15.2f}{result['keepalive_p95_ms']:>8.2f}"
            f"{result['rss_before_mib']:>9.0f}{result['peak_growth_mib']:>11.1f}{result['growth_after_mib']:>12.1f}"
            f"{result['sent_median_mib']:>10.1f}{result['refused_in_s']:>11.2f}{capped}"
        )
        slug = name.replace(" ", "_")
        figures.update({f"{slug}_{field}": round(value, 3) for field, value in result.items()})
    print(
        "(latencies in ms; 'procs': processes whose memory is counted, uvicorn's supervisor and multiprocessing's"
        " resource tracker included; 'sent MiB': the median a client got to send before the server closed on it)"
    )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
