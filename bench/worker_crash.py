"""Worker crash: from a SIGKILL of the process streaming an execution to the execution reading `crashed`, and
to the next execution completing (the successor process takes new work).

Starts the real product (`manage.py serve`: uvicorn plus `run_worker`, SQLite, bubblewrap sandboxes) in a
temporary data dir with SANDBOX_EXECUTION_LEASE=--lease, creates one session through the REST API, then each
round: submits a run that sleeps, waits until it is running, kills the execution stream pool process
(`run_executions`) with SIGKILL, and polls GET /api/v1/executions/<id> every --poll seconds until it reads
`crashed`; then submits `print('back')` and polls until it completes. run_worker restarts the pool, which
ends its predecessor's runs at once (a local worker whose pid is gone needs no lease wait); a worker on a
host that died is found when its lease lapses (docs/scheduling.md), so the lease bounds the first column
only when the host survives.

Usage: python bench/worker_crash.py [--rounds 10] [--lease 6] [--port 0] [--redis-url URL] [--json]
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
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import Api, free_port, percentile  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SLEEPER = "import time\ntime.sleep(3600)\n"
# run_worker gives up on a child that dies within 5 s of its start five times in a row
# (QUICK_EXIT_SECONDS in run_worker.py): each pool is left to live this long before it is killed.
POOL_MIN_AGE = 6.0


def poll(check, what: str, interval: float, timeout: float = 300) -> Any:
    """Call `check` every `interval` seconds until it returns something truthy; give up after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"gave up after {timeout:g} s waiting for {what}")


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def pool_process(server_pid: int) -> int | None:
    """The live execution stream pool process (`manage.py run_executions`) below the server, if one runs."""
    for pid in process_tree(server_pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"run_executions" in command:
            return pid
    return None


def wait_status(api: Api, execution_id: str, wanted: str, interval: float) -> None:
    """Read the execution every `interval` seconds until its status is `wanted`; stop if it ends otherwise."""

    def reached() -> bool:
        status = api.call("GET", f"/executions/{execution_id}")["status"]
        if status in ("completed", "failed", "timeout", "cancelled", "crashed") and status != wanted:
            raise SystemExit(f"execution {execution_id} ended {status}, not {wanted}")
        return status == wanted

    poll(reached, f"execution {execution_id} to be {wanted}", interval)


def process_age(pid: int) -> float:
    """Seconds since `pid` started (its start time in /proc/<pid>/stat, in clock ticks since boot)."""
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def remove_sandboxes(data_dir: str) -> None:
    """Destroy what the server left: sandboxes' mounts and uids outlive a rmtree."""
    sys.path.insert(0, str(ROOT))
    from runtime.process import ProcessRuntime

    runtime = ProcessRuntime(data_dir=data_dir)
    for handle in runtime.list_managed():
        try:
            runtime.destroy(handle)
        except Exception as exc:  # keep going: the rest must still be removed
            print(f"could not remove sandbox {handle.sandbox_id}: {exc}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--lease", type=int, default=6, help="SANDBOX_EXECUTION_LEASE, seconds")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between status reads")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument(
        "--redis-url", default=None, help="serve with this REDIS_URL, e.g. redis://127.0.0.1:6379/13"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        raise SystemExit("bubblewrap (bwrap) is not installed; the process runtime needs it")

    data_dir = tempfile.mkdtemp(prefix="bench-crash-", dir="/tmp")  # short: sandbox socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_RUNTIME")}
    env.update(
        SANDBOX_DATA_DIR=data_dir,
        SANDBOX_EXECUTION_LEASE=str(args.lease),
        DJANGO_SETTINGS_MODULE="sandbox_site.settings",
        LOG_LEVEL="WARNING",
    )
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url

    def manage(*command: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    manage("migrate", "--noinput", "-v0")
    key = manage("create_api_key", "bench").strip().splitlines()[-1]
    port = args.port or free_port()
    log = open(os.path.join(data_dir, "serve.log"), "ab")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = Api(f"http://127.0.0.1:{port}", key)
    crashed: list[float] = []
    back: list[float] = []
    load_before = os.getloadavg()
    try:

        def healthy() -> bool:
            if server.poll() is not None:
                raise SystemExit(f"the server exited:\n{Path(data_dir, 'serve.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{api.base}/api/v1/health", timeout=10).close()
                return True
            except OSError:
                return False

        poll(healthy, "the server to answer", 0.1, timeout=60)
        created = api.call("POST", "/sessions", {"template_id": "python-basic", "timeout": 3600})
        session = poll(
            lambda: (body := api.call("GET", f"/sessions/{created['id']}"))["status"] != "creating" and body,
            "the session to start",
            0.2,
        )
        if session["status"] != "running":
            raise SystemExit(f"the session did not start: {session}")
        try:
            for _ in range(args.rounds):
                run = api.call(
                    "POST", f"/sessions/{session['id']}/execute", {"language": "python", "code": SLEEPER}
                )
                wait_status(api, run["execution_id"], "running", args.poll)
                victim = poll(lambda: pool_process(server.pid), "the execution stream pool", args.poll)
                time.sleep(max(0.0, POOL_MIN_AGE - process_age(victim)))
                killed = time.perf_counter()
                os.kill(victim, signal.SIGKILL)
                wait_status(api, run["execution_id"], "crashed", args.poll)
                crashed.append((time.perf_counter() - killed) * 1000)
                follow = api.call(
                    "POST",
                    f"/sessions/{session['id']}/execute",
                    {"language": "python", "code": "print('back')"},
                )
                wait_status(api, follow["execution_id"], "completed", args.poll)
                back.append((time.perf_counter() - killed) * 1000)
        finally:
            api.call("POST", f"/sessions/{session['id']}/terminate")
    except BaseException:
        print(f"--- server log ---\n{Path(data_dir, 'serve.log').read_text()[-4000:]}", file=sys.stderr)
        raise
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        remove_sandboxes(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    load_after = os.getloadavg()

    figures = {
        "crashed_median_ms": statistics.median(crashed),
        "crashed_p95_ms": percentile(crashed, 0.95),
        "back_median_ms": statistics.median(back),
        "back_p95_ms": percentile(back, 0.95),
    }
    print(
        f"worker crash: SIGKILL of the stream pool, {args.rounds} rounds, lease {args.lease} s, "
        f"status read every {args.poll * 1000:.0f} ms"
    )
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'from the kill until':<44}{'median ms':>12}{'p95 ms':>12}{'max ms':>12}")
    print(
        f"{'the run reads crashed':<44}"
        f"{figures['crashed_median_ms']:>12.1f}{figures['crashed_p95_ms']:>12.1f}{max(crashed):>12.1f}"
    )
    print(
        f"{'the next run has completed':<44}"
        f"{figures['back_median_ms']:>12.1f}{figures['back_p95_ms']:>12.1f}{max(back):>12.1f}"
    )
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))


if __name__ == "__main__":
    main()
