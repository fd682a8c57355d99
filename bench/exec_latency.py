"""Execution latency: the executor round trip against the floor of starting a Python interpreter.

(a) floor: `python3 -c pass` spawned with subprocess, what any design that starts a fresh interpreter per
    execution pays at least;
(b) round trip: a trivial `def handler(event, context): return 1` sent through ExecutorClient to a
    ProcessRuntime sandbox under bubblewrap (a real one, in a temporary data dir), until its result event;
(c) sandbox start: ProcessRuntime.create until the executor answers, sandbox after sandbox.

Usage: python bench/exec_latency.py [--runs 200] [--warmup 20] [--starts 30] [--json]
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
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime.base import ExecuteRequest, SandboxSpec  # noqa: E402
from runtime.events import ExecutionResult  # noqa: E402
from runtime.process import ProcessRuntime  # noqa: E402

HANDLER = "def handler(event, context):\n    return 1\n"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _measure(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure_floor(python: str, runs: int, warmup: int) -> list[float]:
    return _measure(lambda: subprocess.run([python, "-c", "pass"], check=True), runs, warmup)


def measure_round_trip(runs: int, warmup: int) -> tuple[list[float], ProcessRuntime]:
    data_dir = tempfile.mkdtemp(prefix="bench-", dir="/tmp")
    runtime = ProcessRuntime(data_dir=data_dir)
    if not runtime.isolated:
        raise SystemExit(
            "bubblewrap (bwrap) is not installed: the round trip is measured under bubblewrap only"
        )
    handle = runtime.create(
        SandboxSpec(session_id=f"bench-{uuid.uuid4().hex[:8]}", image="python-basic", token=uuid.uuid4().hex)
    )
    client = runtime.executor(handle)

    def once() -> None:
        result = None
        for event in client.execute(
            ExecuteRequest(
                execution_id=uuid.uuid4().hex, language="python", code=HANDLER, event={}, timeout=10
            )
        ):
            result = event
        if (
            not isinstance(result, ExecutionResult)
            or result.status != "completed"
            or result.return_value != 1
        ):
            raise SystemExit(f"unexpected result: {result}")

    try:
        return _measure(once, runs, warmup), runtime
    finally:
        runtime.destroy(handle)
        shutil.rmtree(data_dir, ignore_errors=True)


def measure_sandbox_start(runs: int) -> list[float]:
    """(c) ProcessRuntime.create until the executor answers /health (the destroy after each is not timed)."""
    data_dir = tempfile.mkdtemp(prefix="bench-", dir="/tmp")
    runtime = ProcessRuntime(data_dir=data_dir)
    samples = []
    try:
        for _ in range(runs):
            spec = SandboxSpec(
                session_id=f"bench-{uuid.uuid4().hex[:8]}", image="python-basic", token=uuid.uuid4().hex
            )
            started = time.perf_counter()
            handle = runtime.create(spec)
            samples.append((time.perf_counter() - started) * 1000)
            runtime.destroy(handle)
    finally:
        for handle in runtime.list_managed():
            runtime.destroy(handle)
        shutil.rmtree(data_dir, ignore_errors=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--starts", type=int, default=30, help="sandboxes started for (c)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

    floor = measure_floor(python, args.runs, args.warmup)
    load_before = os.getloadavg()
    trip, runtime = measure_round_trip(args.runs, args.warmup)
    starts = measure_sandbox_start(args.starts)
    load_after = os.getloadavg()
    figures = {
        "spawn_python_median_ms": statistics.median(floor),
        "spawn_python_p95_ms": _percentile(floor, 0.95),
        "executor_round_trip_median_ms": statistics.median(trip),
        "executor_round_trip_p95_ms": _percentile(trip, 0.95),
    }
    figures["sandbox_start_median_ms"] = statistics.median(starts)
    figures["sandbox_start_p95_ms"] = _percentile(starts, 0.95)
    figures["ratio_median"] = figures["executor_round_trip_median_ms"] / figures["spawn_python_median_ms"]
    figures["ratio_p95"] = figures["executor_round_trip_p95_ms"] / figures["spawn_python_p95_ms"]

    cgroups = runtime.cgroups.version if runtime.cgroups and runtime.cgroups.available else "none"
    print(
        f"exec latency: {args.runs} runs after {args.warmup} warm-up, {os.cpu_count()} cores, "
        f"bubblewrap, cgroup v{cgroups}"
    )
    print(f"{'measurement':<44}{'median ms':>12}{'p95 ms':>12}")
    print(
        f"{'(a) ' + python + ' -c pass (subprocess)':<44}"
        f"{figures['spawn_python_median_ms']:>12.2f}{figures['spawn_python_p95_ms']:>12.2f}"
    )
    print(
        f"{'(b) executor round trip, handler -> 1':<44}"
        f"{figures['executor_round_trip_median_ms']:>12.2f}{figures['executor_round_trip_p95_ms']:>12.2f}"
    )
    print(
        f"{'(c) sandbox start (create until healthy)':<44}"
        f"{figures['sandbox_start_median_ms']:>12.2f}{figures['sandbox_start_p95_ms']:>12.2f}"
    )
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'ratio (b) / (a)':<44}{figures['ratio_median']:>12.2f}{figures['ratio_p95']:>12.2f}")
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
