"""What the kubernetes runtime's isolation costs at start: KubernetesRuntime.create (cold, to executor /health)
with and without the network container, and with a uid per session against one fixed uid.

Variants, alternated run by run so a busy host slows all alike:
  isolated, own uid   the default (SANDBOX_K8S_ISOLATE_NETWORK on, spec.sandbox_uid per session);
  open, own uid       no network container;
  isolated, uid 1000  every pod the same uid;
  open, uid 1000      neither.
Prints median and p95 per variant, the cost of each choice as a difference of medians, and the host's load
average before and after. Every pod it creates is deleted, also on failure.

Usage: KUBECONFIG=... python bench/k8s_isolation_startup.py [--runs 10] [--namespace default]
       [--image IMAGE] [--pull-policy Never]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import print_samples  # noqa: E402
from runtime.base import SandboxSpec  # noqa: E402
from runtime.kubernetes import KubernetesRuntime  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "isolated, own uid": {"isolate_network": True, "sandbox_uid": None},
    "open, own uid": {"isolate_network": False, "sandbox_uid": None},
    "isolated, uid 1000": {"isolate_network": True, "sandbox_uid": 1000},
    "open, uid 1000": {"isolate_network": False, "sandbox_uid": 1000},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--image", default="sandbox-template-python-basic:latest")
    parser.add_argument("--pull-policy", default="Never")
    args = parser.parse_args()
    instance = f"bench-isolation-{secrets.token_hex(4)}"
    runtimes = {
        name: KubernetesRuntime(
            namespace=args.namespace, image_pull_policy=args.pull_policy, instance=instance, **config
        )
        for name, config in VARIANTS.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()
    try:
        for _ in range(args.runs):
            for name, runtime in runtimes.items():
                spec = SandboxSpec(
                    session_id=f"bench{secrets.token_hex(6)}",
                    image=args.image,
                    token=secrets.token_urlsafe(24),
                )
                started = time.perf_counter()
                handle = runtime.create(spec)
                samples[name].append((time.perf_counter() - started) * 1000)
                runtime.destroy(handle)
    finally:
        leftover = next(iter(runtimes.values()))
        for handle in leftover.list_managed():
            leftover.destroy(handle)
    load_after = os.getloadavg()
    medians = print_samples("KubernetesRuntime.create, cold, to executor /health", samples, width=24)
    network = medians["isolated, own uid"] - medians["open, own uid"]
    network_fixed = medians["isolated, uid 1000"] - medians["open, uid 1000"]
    uid = medians["isolated, own uid"] - medians["isolated, uid 1000"]
    uid_open = medians["open, own uid"] - medians["open, uid 1000"]
    print(f"network container: +{network:.1f} ms (own uid), +{network_fixed:.1f} ms (uid 1000)")
    print(f"uid per session: {uid:+.1f} ms (isolated), {uid_open:+.1f} ms (open)")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}"
    )


if __name__ == "__main__":
    main()
