"""Dependency install: cold (an empty package store: download, then pip) against an identical request that
reuses the installed tree.

Each round starts from a fresh package store: one sandbox installs the requirement (cold), a second sandbox
sends the same request and gets the kept tree linked in (neither the download nor pip runs). ProcessRuntime
under bubblewrap, in a temporary data dir, as bench/exec_latency.py. The cold figure includes fetching the
wheels from the package index (PyPI unless --index-url), so it varies with the network.

Usage: python bench/dependency_install.py [--rounds 5] [--requirement pyfiglet==1.0.2] [--index-url URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import percentile  # noqa: E402
from runtime.base import PackageInstall, SandboxSpec  # noqa: E402
from runtime.process import ProcessRuntime  # noqa: E402

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def install(runtime: ProcessRuntime, request: PackageInstall) -> tuple[float, str]:
    """Install `request` into a new sandbox; its wall time in ms and the install's log. The sandbox's start
    and removal are not timed."""
    handle = runtime.create(
        SandboxSpec(session_id=f"bench-{uuid.uuid4().hex[:8]}", image="python-basic", token=uuid.uuid4().hex)
    )
    try:
        started = time.perf_counter()
        result = runtime.install_packages(handle, request)
        return (time.perf_counter() - started) * 1000, result.log
    finally:
        runtime.destroy(handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requirement", default="pyfiglet==1.0.2")
    parser.add_argument("--index-url", default="", help="package index (default: the installer's, PyPI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if shutil.which("bwrap") is None:
        raise SystemExit("bubblewrap (bwrap) is not installed: installs are measured under bubblewrap only")

    data_dir = tempfile.mkdtemp(prefix="bench-deps-", dir="/tmp")  # short: sandbox socket paths
    runtime = ProcessRuntime(data_dir=data_dir)
    cold: list[float] = []
    reused: list[float] = []
    load_before = os.getloadavg()
    try:
        for round_number in range(args.rounds):
            request = PackageInstall(
                requirements=(args.requirement,),
                index_url=args.index_url,
                ca_bundle=CA_BUNDLE if os.path.isfile(CA_BUNDLE) else "",
                cache_dir=os.path.join(data_dir, f"store-{round_number}"),  # empty: a cold install
                timeout=600.0,
                reuse_ttl=3600.0,
            )
            elapsed, log = install(runtime, request)
            if log.startswith("reused installed tree"):
                raise SystemExit(f"round {round_number}: the cold install reused a tree: {log}")
            cold.append(elapsed)
            elapsed, log = install(runtime, request)
            if not log.startswith("reused installed tree"):
                raise SystemExit(
                    f"round {round_number}: the identical request did not reuse the tree:\n{log}"
                )
            reused.append(elapsed)
    finally:
        for handle in runtime.list_managed():
            runtime.destroy(handle)
        shutil.rmtree(data_dir, ignore_errors=True)
    load_after = os.getloadavg()

    figures = {
        "cold_median_ms": statistics.median(cold),
        "cold_p95_ms": percentile(cold, 0.95),
        "reused_median_ms": statistics.median(reused),
        "reused_p95_ms": percentile(reused, 0.95),
    }
    print(f"install of {args.requirement}, {args.rounds} rounds, {os.cpu_count()} cores, bubblewrap")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'':<36}{'median ms':>12}{'p95 ms':>12}")
    print(f"{'cold (download and pip)':<36}{figures['cold_median_ms']:>12.1f}{figures['cold_p95_ms']:>12.1f}")
    print(
        f"{'identical request (tree reused)':<36}"
        f"{figures['reused_median_ms']:>12.1f}{figures['reused_p95_ms']:>12.1f}"
    )
    print(f"{'reused / cold':<36}{figures['reused_median_ms'] / figures['cold_median_ms']:>12.2f}")
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
