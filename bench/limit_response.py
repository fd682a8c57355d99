"""How promptly limits and failures act, per backend: the timings the contract tests leave out.

The tests assert what happens (status timeout, output truncated, a failed start reported with its output);
how long it takes is measured here, on a real sandbox of each backend this machine can run:
  timeout overshoot   a busy loop with a 2 s timeout: time to its result, minus the 2 s;
  fork bomb stopped   a Python fork bomb with max_processes=64 and a 3 s timeout: time to its result;
  50 MiB output       printing 50 MiB (truncated to the cap): time to the result;
  health after flood  /health right after the 50 MiB execution;
  OOM reported        a 256 MiB sandbox allocating without end: time to its `crashed` result;
  failed start        a sandbox whose executor refuses its options: time until create raises;
  docker stop         (Docker) `docker stop` of a sandbox: SIGTERM through tini to the executor.

Usage: python bench/limit_response.py [--runs 3] [--backends process,docker] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime.base import ExecuteRequest, Resources, Runtime, RuntimeFailure, SandboxSpec  # noqa: E402
from runtime.events import ExecutionResult  # noqa: E402

IMAGES = {"process": "python-basic", "docker": "sandbox-template-python-basic:latest"}
BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
FLOOD = "import sys\nchunk = 'x' * (1024 * 1024)\nfor _ in range(50):\n    sys.stdout.write(chunk)\n"
HOG = "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024 * 1024))\n"


def build(backend: str, data_dir: str, **config: object) -> Runtime:
    if backend == "process":
        from runtime.process import ProcessRuntime

        return ProcessRuntime(data_dir=data_dir, **config)  # type: ignore[arg-type]
    from runtime.docker import DockerRuntime

    return DockerRuntime(data_dir=data_dir, **config)  # type: ignore[arg-type]


def spec(backend: str, **resources: object) -> SandboxSpec:
    return SandboxSpec(
        session_id=f"b{uuid.uuid4().hex[:12]}",
        image=IMAGES[backend],
        token=secrets.token_urlsafe(24),
        resources=Resources(**resources),  # type: ignore[arg-type]
    )


def run(runtime: Runtime, handle, code: str, timeout: float) -> ExecutionResult:
    request = ExecuteRequest(execution_id=uuid.uuid4().hex, language="python", code=code, timeout=timeout)
    result = list(runtime.execute(handle, request))[-1]
    assert isinstance(result, ExecutionResult), result
    return result


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def one_round(runtime: Runtime, backend: str, data_dir: str, add: Callable[[str, float], None]) -> None:
    handle = runtime.create(spec(backend, max_processes=64, memory_mb=256))
    add("timeout overshoot", timed(lambda: run(runtime, handle, "while True:\n    pass\n", 2)) - 2000)
    add("fork bomb stopped", timed(lambda: run(runtime, handle, BOMB, 3)))
    add("50 MiB output", timed(lambda: run(runtime, handle, FLOOD, 60)))
    add("health after flood", timed(lambda: runtime.executor(handle).health()))
    add("OOM reported", timed(lambda: run(runtime, handle, HOG, 30)))
    if backend == "docker":
        container = runtime.docker().containers.get(handle.sandbox_id)  # type: ignore[attr-defined]
        add("docker stop", timed(lambda: container.stop(timeout=10)))
    runtime.destroy(handle)
    broken = build(backend, data_dir, max_output=-1)  # the executor refuses this option

    def failed_start() -> None:
        try:
            broken.create(spec(backend))
        except RuntimeFailure:
            return
        raise SystemExit("a sandbox with max_output=-1 started")

    add("failed start", timed(failed_start))


def measure(backend: str, runs: int) -> dict[str, list[float]]:
    data_dir = tempfile.mkdtemp(prefix="bench-", dir="/tmp")
    runtime = build(backend, data_dir)
    samples: dict[str, list[float]] = {}
    try:
        for _ in range(runs):
            one_round(
                runtime, backend, data_dir, lambda name, value: samples.setdefault(name, []).append(value)
            )
    finally:
        for handle in runtime.list_managed():
            runtime.destroy(handle)
        shutil.rmtree(data_dir, ignore_errors=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="process,docker")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    figures: dict[str, dict[str, float]] = {}
    print(f"{'backend':<9}{'measurement':<22}{'median ms':>11}{'max ms':>11}")
    for backend in args.backends.split(","):
        for name, values in measure(backend, args.runs).items():
            figures[f"{backend} {name}"] = {"median_ms": statistics.median(values), "max_ms": max(values)}
            print(f"{backend:<9}{name:<22}{statistics.median(values):>11.1f}{max(values):>11.1f}")
    print(f"runs {args.runs}; load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        print(json.dumps({key: {k: round(v, 1) for k, v in value.items()} for key, value in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
