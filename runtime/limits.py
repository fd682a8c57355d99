"""The rlimits the executor puts on every execution child, derived from a sandbox's Resources.

They complement the cgroup, they do not replace it: RLIMIT_NPROC is ignored for root and counts per user,
RLIMIT_AS counts reserved address space rather than memory. So `nproc` and `as` matter only where no cgroup
can be had (a non-root control plane without cgroup delegation); `nofile` always applies, and `fsize` where
the workspace is not a loop-mounted file system of the session's size: cgroups bound neither. CPU time is the executor's own per-execution RLIMIT_CPU, set from each
request's timeout.
"""

from __future__ import annotations

from runtime.base import Resources

MIB = 1024 * 1024
OPEN_FILES = 1024
# Node reserves far more address space than it touches (V8's heap cage, code range, wasm guard regions); it
# aborts at start below roughly 768 MiB of RLIMIT_AS on this machine. The fallback therefore grants the
# memory limit plus this much headroom: loose as a memory bound, but the only one that needs no privilege.
ADDRESS_SPACE_HEADROOM_MB = 2048


def address_space_bytes(resources: Resources) -> int:
    return (int(resources.memory_mb) + ADDRESS_SPACE_HEADROOM_MB) * MIB


def executor_limit_args(resources: Resources, *, memory_cgroup: bool, disk_total: bool = False) -> list[str]:
    """`--limit NAME=VALUE` options for the executor's command line.

    `disk_total`: the workspace is a file system of the session's disk size (a loop-mounted image), which
    bounds all files together and grows with update_resources; a per-file limit fixed at start would only
    get in the way of a grown workspace. Without it, a single file may not exceed the disk allowance, the
    weaker bound that needs no privilege.
    """
    limits = {"nproc": int(resources.max_processes), "nofile": OPEN_FILES}
    if not disk_total:
        limits["fsize"] = int(resources.disk_mb) * MIB
    if not memory_cgroup:
        limits["as"] = address_space_bytes(resources)
    args: list[str] = []
    for name, value in limits.items():
        args += ["--limit", f"{name}={value}"]
    return args
