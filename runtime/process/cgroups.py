"""Per-sandbox cgroups: memory, process-count and CPU limits that hold even when the control plane is root.

rlimits are per process (RLIMIT_AS, RLIMIT_CPU) or per user and ignored for root (RLIMIT_NPROC), so only a
cgroup bounds a whole sandbox: a fork bomb stops at `pids.max`, a memory hog meets the OOM killer at the
memory limit. Both layouts are handled: cgroup v1 (one hierarchy per controller, as on this machine) and the
v2 unified hierarchy. Each sandbox's cgroup is created *below the control plane's own cgroup* in every
hierarchy, so whatever confines the control plane (a systemd unit, a container) also confines its sandboxes;
escaping to the root cgroup would quietly lift the operator's limits.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from runtime.base import Resources

logger = logging.getLogger(__name__)

CGROUP_MOUNT = "/sys/fs/cgroup"
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "pids", "cpu")
REQUIRED = ("memory", "pids")
GROUP = "sandbox-control-plane"
# Tasks of ours in the cgroup besides the sandboxed code: the supervisor shell, bwrap (outside and as the
# namespace's init), the executor daemon, its threads and its zygote. pids.max counts threads too.
PIDS_OVERHEAD = 32


@dataclass
class SandboxCgroup:
    """One sandbox's cgroup: a directory per v1 controller, or a single v2 directory (key "unified")."""

    version: int
    paths: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"version": self.version, "paths": dict(self.paths)}

    @classmethod
    def from_json(cls, data: dict | None) -> SandboxCgroup | None:
        if not data or not data.get("paths"):
            return None
        return cls(version=int(data["version"]), paths={str(k): str(v) for k, v in data["paths"].items()})

    def procs_files(self) -> list[str]:
        """Where a process writes its pid to join; every hierarchy must be joined for the limits to hold."""
        return [os.path.join(path, "cgroup.procs") for path in self.paths.values()]

    def apply(self, resources: Resources) -> None:
        """Write the limits; raises OSError when the kernel refuses (e.g. a limit below current usage)."""
        memory = int(resources.memory_mb) * 1024 * 1024
        pids = int(resources.max_processes) + PIDS_OVERHEAD
        quota = max(1000, int(resources.cpu * CPU_PERIOD_US))
        if self.version == 2:
            base = self.paths["unified"]
            _write(base, "memory.max", str(memory))
            _write_optional(base, "memory.swap.max", "0")
            _write(base, "pids.max", str(pids))
            _write_optional(base, "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        mem = self.paths["memory"]
        # v1 insists limit_in_bytes <= memsw.limit_in_bytes at every moment, so the order depends on the
        # direction of the change: raise memsw first when growing, lower limit_in_bytes first when shrinking.
        memsw = os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes"))
        current = _read_int(mem, "memory.limit_in_bytes")
        if memsw and (current is None or memory > current):
            _write(mem, "memory.memsw.limit_in_bytes", str(memory))
            _write(mem, "memory.limit_in_bytes", str(memory))
        else:
            _write(mem, "memory.limit_in_bytes", str(memory))
            if memsw:
                _write(mem, "memory.memsw.limit_in_bytes", str(memory))
        _write(self.paths["pids"], "pids.max", str(pids))
        if "cpu" in self.paths:
            _write(self.paths["cpu"], "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(self.paths["cpu"], "cpu.cfs_quota_us", str(quota))

    def memory_mb(self) -> float | None:
        key = "unified" if self.version == 2 else "memory"
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        value = _read_int(self.paths.get(key, ""), name)
        return None if value is None else round(value / (1024 * 1024), 1)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            try:
                with open(procs, encoding="ascii") as fh:
                    found.update(int(line) for line in fh if line.strip())
            except OSError:
                continue
        return found

    def exists(self) -> bool:
        return any(os.path.isdir(path) for path in self.paths.values())

    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL everything inside until empty; True when empty.

        v1 has no atomic kill, and a fork bomb forks between our read of cgroup.procs and our signals, so
        this loops; it terminates because pids.max caps the population and killed tasks cannot fork.
        """
        if self.version == 2:
            _write_optional(
                self.paths["unified"], "cgroup.kill", "1"
            )  # atomic where the kernel has it (5.14+)
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the directories; raises OSError if the kernel keeps one busy."""
        self.kill(timeout)
        deadline = time.monotonic() + timeout
        for path in self.paths.values():
            while os.path.isdir(path):
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY: a task that just got SIGKILL is still exiting; it leaves within milliseconds.
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    self.kill(0.5)
                    time.sleep(0.01)
            # Leave no empty group directory behind inside a cgroup we do not own (the control plane's
            # own, e.g. a systemd unit's): it would keep that cgroup from being removed. A create racing
            # with this re-makes the group (CgroupManager.create), and a busy group simply stays.
            parent = os.path.dirname(path)
            if os.path.basename(parent) == GROUP:
                try:
                    os.rmdir(parent)
                except OSError:
                    pass


class CgroupManager:
    """Finds, once, where on this host sandbox cgroups can be made; `available` is False when nowhere."""

    def __init__(self, *, mount: str = CGROUP_MOUNT, group: str = GROUP) -> None:
        self.mount = mount
        self.group = group
        self.version = 0
        self.bases: dict[str, str] = {}
        self.reason = ""
        try:
            self._discover()
        except OSError as exc:
            self.reason = f"cgroups unusable: {exc}"
            self.bases = {}
        if not self.bases:
            self.version = 0
            logger.info("no per-sandbox cgroups (%s); limits fall back to rlimits", self.reason)

    @property
    def available(self) -> bool:
        return bool(self.bases)

    def create(self, name: str, resources: Resources) -> SandboxCgroup:
        """Make the sandbox's cgroup and write its limits; on any error nothing is left behind."""
        cgroup = SandboxCgroup(
            self.version, {key: os.path.join(base, name) for key, base in self.bases.items()}
        )
        made: list[str] = []
        try:
            for path in cgroup.paths.values():
                try:
                    os.mkdir(path, 0o755)
                except FileNotFoundError:  # the last sandbox's destroy just pruned the group directory
                    self._make_base(os.path.dirname(path))
                    os.mkdir(path, 0o755)
                made.append(path)
            if self.version == 2:
                _write_optional(cgroup.paths["unified"], "memory.oom.group", "0")
            cgroup.apply(resources)
        except OSError:
            for path in reversed(made):
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            raise
        return cgroup

    def _make_base(self, base: str) -> None:
        os.makedirs(base, exist_ok=True)
        if self.version == 2:
            with open(os.path.join(os.path.dirname(base), "cgroup.subtree_control"), encoding="ascii") as fh:
                enabled = fh.read().split()
            _write(base, "cgroup.subtree_control", " ".join(f"+{c}" for c in enabled))

    def _discover(self) -> None:
        own = _own_cgroups()
        if os.path.exists(os.path.join(self.mount, "cgroup.controllers")):
            self._discover_v2(self.mount, own.get("", "/"))
            return
        mounts = _v1_mounts()
        missing = [c for c in REQUIRED if c not in mounts]
        if missing:
            self.reason = f"cgroup v1 controller(s) {', '.join(missing)} not mounted"
            return
        bases = {}
        for controller in V1_CONTROLLERS:
            if controller not in mounts:
                continue
            base = os.path.join(mounts[controller], own.get(controller, "/").lstrip("/"), self.group)
            try:
                os.makedirs(base, exist_ok=True)
            except OSError as exc:
                if controller in REQUIRED:
                    self.reason = f"cannot create {base}: {exc}"
                    return
                continue
            if not os.access(base, os.W_OK):
                if controller in REQUIRED:
                    self.reason = f"{base} is not writable"
                    return
                continue
            bases[controller] = base
        self.version, self.bases = 1, bases

    def _discover_v2(self, mount: str, own: str) -> None:
        # v2 forbids controllers on a cgroup that also holds processes ("no internal processes"), and our
        # own cgroup holds us. So the sandboxes' parent is a sibling-free child of ours with the controllers
        # enabled on our cgroup's subtree_control; that write fails (EBUSY) unless our cgroup is the root or
        # was delegated to us with us in a leaf, in which case we fall back to rlimits rather than move
        # ourselves around a hierarchy we do not own.
        parent = os.path.join(mount, own.lstrip("/"))
        with open(os.path.join(parent, "cgroup.controllers"), encoding="ascii") as fh:
            offered = fh.read().split()
        missing = [c for c in REQUIRED if c not in offered]
        if missing:
            self.reason = f"cgroup v2 controller(s) {', '.join(missing)} not delegated to {parent}"
            return
        wanted = [c for c in ("memory", "pids", "cpu") if c in offered]
        _write(parent, "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        base = os.path.join(parent, self.group)
        os.makedirs(base, exist_ok=True)
        _write(base, "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        self.version, self.bases = 2, {"unified": base}


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ("" is the v2 unified entry)."""
    result: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="ascii") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                result[controller] = path
    return result


def _v1_mounts() -> dict[str, str]:
    """controller -> mount point of its v1 hierarchy (a hierarchy may carry several, e.g. cpu,cpuacct)."""
    mounts: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(tail) < 3 or tail[0] != "cgroup":
                continue
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS:
                    mounts.setdefault(option, fields[4])
    return mounts


def _write(directory: str, name: str, value: str) -> None:
    with open(os.path.join(directory, name), "w", encoding="ascii") as fh:
        fh.write(value)


def _write_optional(directory: str, name: str, value: str) -> bool:
    try:
        _write(directory, name, value)
    except OSError:
        return False
    return True


def _read_int(directory: str, name: str) -> int | None:
    try:
        with open(os.path.join(directory, name), encoding="ascii") as fh:
            raw = fh.read().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None
