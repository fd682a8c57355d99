"""What the kubernetes pod's `packages` container costs at start: KubernetesRuntime.create (cold, to executor
/health) with the container, as every pod has it, and with it stripped from the manifest (no per-session
dependencies possible then), alternated run by run so a busy host slows both alike. Also the cost of one
install's transfer into a running pod: a tar of `--tar-mb` MiB of files streamed into the container and
swapped in (packages.push), without pip.

Prints median and p95 per variant, the difference of medians, and the load average before and after. Every
pod it creates is deleted, also on failure.

Usage: KUBECONFIG=... python bench/k8s_packages_sidecar.py [--runs 10] [--namespace default]
       [--image IMAGE] [--pull-policy Never] [--tar-mb 50]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import print_samples  # noqa: E402
from runtime.base import SandboxSpec  # noqa: E402
from runtime.kubernetes import KubernetesRuntime  # noqa: E402
from runtime.kubernetes import packages as kp  # noqa: E402
from runtime.kubernetes import spec as ks  # noqa: E402

WITH, WITHOUT = "with packages container", "without"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--image", default="sandbox-template-python-basic:latest")
    parser.add_argument("--pull-policy", default="Never")
    parser.add_argument("--tar-mb", type=int, default=50)
    args = parser.parse_args()
    runtime = KubernetesRuntime(
        namespace=args.namespace,
        image_pull_policy=args.pull_policy,
        instance=f"bench-sidecar-{secrets.token_hex(4)}",
    )
    full_manifest = ks.pod_manifest

    def stripped(*a, **kw):
        pod = full_manifest(*a, **kw)
        pod["spec"]["containers"] = [c for c in pod["spec"]["containers"] if c["name"] != kp.SIDECAR]
        return pod

    samples: dict[str, list[float]] = {WITH: [], WITHOUT: []}
    transfers: list[float] = []
    load_before = os.getloadavg()
    try:
        for run in range(args.runs):
            for name in (WITH, WITHOUT):
                ks.pod_manifest = full_manifest if name == WITH else stripped
                spec = SandboxSpec(
                    session_id=f"bench{secrets.token_hex(6)}",
                    image=args.image,
                    token=secrets.token_urlsafe(24),
                )
                started = time.perf_counter()
                handle = runtime.create(spec)
                samples[name].append((time.perf_counter() - started) * 1000)
                if name == WITH and run < 3:
                    transfers.append(transfer(runtime, handle, args.tar_mb))
                runtime.destroy(handle)
    finally:
        ks.pod_manifest = full_manifest
        for handle in runtime.list_managed():
            runtime.destroy(handle)
    load_after = os.getloadavg()
    medians = print_samples("KubernetesRuntime.create, cold, to executor /health", samples, width=26)
    print(f"packages container: {medians[WITH] - medians[WITHOUT]:+.1f} ms (difference of medians)")
    print(
        f"transfer of {args.tar_mb} MiB into a running pod (tar, stream, swap): median "
        f"{statistics.median(transfers):.0f} ms over {len(transfers)}"
    )
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}"
    )


def transfer(runtime: KubernetesRuntime, handle, megabytes: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        tree = os.path.join(work, "tree")
        os.makedirs(os.path.join(tree, "pkg"))
        for index in range(megabytes):
            with open(os.path.join(tree, "pkg", f"part{index}.bin"), "wb") as fh:
                fh.write(os.urandom(1 << 20))
        archive = os.path.join(work, "packages.tar")
        started = time.perf_counter()
        kp.write_tar(tree, archive)
        kp.push(runtime, handle.sandbox_id, handle.session_id, archive)
        return (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    main()
