"""Live output latency: from a `print` in the sandbox to its arrival at a websocket client.

For each mode it starts a fresh server in a temporary data dir, as `make run` does (`manage.py serve`: uvicorn plus
the django-q2 worker in its own process, SQLite, a real bubblewrap sandbox), creates a session through the REST API, submits
code that prints a timestamped line every --interval seconds, and watches the execution over
/ws/executions/<id>/ with an API key. Each line's latency is the client's clock at arrival minus the
sandbox's clock at the print (one host, one clock). Lines printed before the socket was open are not counted.

Modes:
  embedded  no REDIS_URL: the in-process channel layer cannot reach the worker's process, so the consumer
            polls the stored chunks (DESIGN.md §7)
  redis     REDIS_URL set (default redis://127.0.0.1:6379/14, or $REDIS_URL): the worker's broadcasts reach
            the consumer through the Redis channel layer; skipped when Redis does not answer

Usage: python bench/stream_latency.py [--lines 100] [--interval 0.15] [--mode embedded|redis|both] [--json]
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import websocket  # websocket-client (a dependency of the kubernetes client)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import Api, free_port, percentile  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent.parent
TARGETS_MS = {"embedded": 150.0, "redis": 50.0}

PRINTER = """import time
time.sleep({settle})
for i in range({lines}):
    print(f"{{i}} {{time.time():.6f}}", flush=True)
    time.sleep({interval})
"""


def redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


@contextmanager
def server(redis_url: str | None, port: int) -> Iterator[tuple[str, str]]:
    """A fresh server (`manage.py serve`: uvicorn + worker) in a temporary data dir; yields (base url, API key)."""
    data_dir = Path(tempfile.mkdtemp(prefix="scp-bench-", dir="/tmp"))  # short: sandbox socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_RUNTIME")}
    env.update(
        SANDBOX_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="sandbox_site.settings", LOG_LEVEL="WARNING"
    )
    if redis_url:
        env["REDIS_URL"] = redis_url

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    manage("migrate", "--noinput", "-v0")
    key = manage("create_api_key", "bench").strip().splitlines()[-1]
    port = port or free_port()
    log = open(data_dir / "servers.log", "ab")  # noqa: SIM115 - closed below
    # `manage.py serve`, as `make run`: uvicorn's web processes plus the worker, one SIGTERM stops them all.
    children = [
        subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a busy machine starts it slowly
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v1/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or any(child.poll() is not None for child in children):
                    raise SystemExit(
                        f"the server did not start:\n{(data_dir / 'servers.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.1)
        yield base, key
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def measure(base: str, key: str, lines: int, interval: float) -> list[float]:
    api = Api(base, key)
    session = api.call("POST", "/sessions", {"template_id": "python-basic"})
    deadline = time.monotonic() + 60
    while session["status"] == "creating" and time.monotonic() < deadline:
        time.sleep(0.2)
        session = api.call("GET", f"/sessions/{session['id']}")
    if session["status"] != "running":
        raise SystemExit(f"the session did not start: {session}")
    try:
        # One run first: the worker's first task and the sandbox's zygote warm up outside the measurement.
        warm = api.call(
            "POST", f"/sessions/{session['id']}/execute-sync", {"language": "python", "code": "print(1)"}
        )
        if warm.get("status") != "completed":
            raise SystemExit(f"the warm-up run failed: {warm}")
        code = PRINTER.format(settle=1.0, lines=lines, interval=interval)
        execution = api.call(
            "POST",
            f"/sessions/{session['id']}/execute",
            {"language": "python", "code": code, "timeout": int(lines * interval + 60)},
        )
        ws_url = f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/ws/executions/{execution['execution_id']}/"
        client = websocket.create_connection(ws_url, header=[f"Authorization: Bearer {key}"], timeout=60)
        connected_at = time.time()
        latencies: list[float] = []
        try:
            while True:
                message = json.loads(client.recv())
                arrived = time.time()
                if message["type"] == "output" and message["stream"] == "stdout":
                    for line in message["data"].splitlines():
                        printed = float(line.split()[1])
                        if printed >= connected_at:
                            latencies.append((arrived - printed) * 1000)
                elif message["type"] == "result":
                    if message["status"] != "completed":
                        raise SystemExit(f"the measured run ended {message['status']}: {message}")
                    break
                elif message["type"] == "error":
                    raise SystemExit(f"the websocket refused: {message}")
        finally:
            client.close()
        return latencies
    finally:
        api.call("POST", f"/sessions/{session['id']}/terminate")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.15, help="seconds between prints")
    parser.add_argument("--mode", choices=("embedded", "redis", "both"), default="both")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14",
        help="the redis mode's REDIS_URL, with its database number (default: $REDIS_URL, else db 14)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        raise SystemExit("bubblewrap (bwrap) is not installed: the sandbox runs under bubblewrap only")

    modes = ["embedded", "redis"] if args.mode == "both" else [args.mode]
    load_before = os.getloadavg()
    results: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for mode in modes:
        if mode == "redis" and not redis_answers(args.redis_url):
            skipped[mode] = f"Redis does not answer at {args.redis_url}"
            continue
        with server(args.redis_url if mode == "redis" else None, args.port) as (base, key):
            results[mode] = measure(base, key, args.lines, args.interval)

    print(
        f"print-to-websocket latency, {args.lines} lines {args.interval * 1000:.0f} ms apart (ms); load average "
        f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    print(f"{'mode':<10} {'lines':>6} {'median':>8} {'p95':>8} {'max':>8} {'target':>14}")
    figures: dict[str, float] = {}
    for mode in modes:
        if mode in skipped:
            print(f"{mode:<10} skipped: {skipped[mode]}")
            continue
        samples = results[mode]
        median, p95 = statistics.median(samples), percentile(samples, 0.95)
        verdict = "met" if median <= TARGETS_MS[mode] else "MISSED"
        print(
            f"{mode:<10} {len(samples):>6} {median:>8.1f} {p95:>8.1f} {max(samples):>8.1f} "
            f"{'median <= ' + str(int(TARGETS_MS[mode])):>14} {verdict}"
        )
        figures.update(
            {
                f"{mode}_median_ms": round(median, 2),
                f"{mode}_p95_ms": round(p95, 2),
                f"{mode}_max_ms": round(max(samples), 2),
            }
        )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
