"""Docker engine plumbing for the docker backend: error translation, usage sampling, live limit updates.

Kept apart from docker.py so the backend reads as the sandbox lifecycle, and so the places that lean on the
engine's wire format (stats fields, the update endpoint) are in one small module.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from typing import Any

import docker.errors
import requests.exceptions
from docker.models.containers import _create_container_args

from runtime.base import RuntimeFailure

MIB = 1024 * 1024


def engine_failure(exc: BaseException, what: str) -> RuntimeFailure:
    """Turn anything the docker SDK or its HTTP layer raised into a RuntimeFailure saying what went wrong.

    Permanent where a retry cannot help (no such image or container, a name clash, a request the engine
    refuses as invalid); transient where the engine is down, slow, or failed on its side.
    """
    if isinstance(exc, RuntimeFailure):
        return exc
    if isinstance(exc, docker.errors.ImageNotFound):
        return RuntimeFailure(
            f"{what}: image not found ({_explain(exc)}); build it with images/build.sh", permanent=True
        )
    if isinstance(exc, docker.errors.NotFound):
        return RuntimeFailure(f"{what}: not found ({_explain(exc)})", permanent=True)
    if isinstance(exc, docker.errors.ContainerError):
        # The engine answered and ran the container; what failed is the program in it.
        said = (exc.stderr or b"").decode("utf-8", "replace").strip()[-500:] if exc.stderr else ""
        return RuntimeFailure(
            f"{what}: its container exited with status {exc.exit_status}" + (f": {said}" if said else ""),
            permanent=True,
        )
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 500
        if status == 409:
            return RuntimeFailure(f"{what}: conflict: {_explain(exc)}", permanent=True)
        return RuntimeFailure(
            f"{what}: the Docker engine answered {status}: {_explain(exc)}", permanent=400 <= status < 500
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return RuntimeFailure(f"{what}: the Docker engine did not answer in time ({exc})")
    if isinstance(exc, (requests.exceptions.RequestException, docker.errors.DockerException, OSError)):
        return RuntimeFailure(f"{what}: the Docker engine is unreachable ({type(exc).__name__}: {exc})")
    return RuntimeFailure(f"{what}: {type(exc).__name__}: {exc}")


def _explain(exc: docker.errors.APIError) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def create_container(client: Any, image: str, options: dict[str, Any]) -> Any:
    """Create a container from `containers.create`-style options; return its model, not yet inspected.

    The SDK's `containers.create` inspects the container it just made, one more engine round trip on every
    sandbox start for attributes nobody reads before the container runs (whoever needs its state reloads
    it). This makes the same create request, through the SDK's own translation of the options.
    """
    arguments = _create_container_args({**options, "image": image, "version": client.api._version})
    created = client.api.create_container(**arguments)
    return client.containers.prepare_model({"Id": created["Id"]})


def limits_body(*, cpu: float, memory_mb: int, max_processes: int) -> dict[str, int]:
    """The engine's HostConfig fields for these limits: cpu as NanoCpus, memory with memory+swap equal."""
    memory = int(memory_mb) * MIB
    return {
        "NanoCpus": int(float(cpu) * 1e9),
        "Memory": memory,
        "MemorySwap": memory,
        "PidsLimit": int(max_processes),
    }


def update_limits(
    client: Any,
    ref: str,
    *,
    cpu: float,
    memory_mb: int,
    max_processes: int,
    current: dict[str, Any] | None = None,
) -> bool:
    """Set cpu, memory and the pids limit of a live container; return whether the engine was asked to.

    `current` is the container's HostConfig as inspected: when it already has these limits nothing is sent.
    That is the common case of a claimed warm sandbox (the session asks for the template's defaults), and an
    update is not cheap: the engine runs `runc update` on the host for it, tens of ms on a busy one.

    The SDK's Container.update() cannot send NanoCpus or PidsLimit, and the engine refuses a CpuQuota update
    on a container created with NanoCpus; the engine's documented update endpoint takes all three, so this
    posts to it through the SDK's own request plumbing (same session, same API version negotiation).
    """
    body = limits_body(cpu=cpu, memory_mb=memory_mb, max_processes=max_processes)
    if current is not None and all(current.get(field) == value for field, value in body.items()):
        return False
    api = client.api
    try:
        api._result(api._post_json(api._url("/containers/{0}/update", ref), data=body), True)
    except Exception as exc:
        # A memory limit below what the container uses right now comes back as a 500 from the kernel's EBUSY;
        # that is the caller's input, not the engine's health.
        failure = engine_failure(exc, f"cannot change the limits of container {ref}")
        if "memory" in failure.message.lower() and "usage" in failure.message.lower():
            failure.permanent = True
        raise failure from exc
    return True


class UsageSampler:
    """Current CPU (percent of one core, as `docker stats` shows it) and memory of containers, quickly.

    The engine's stats call is slow for this: non-streaming stats wait for a second sample, and on Docker
    20.10 even a one-shot request waits for the next tick of its 1 s collector once one runs. The control
    plane shares the host with its containers (it must: it talks to them over bind-mounted sockets), so it
    reads the container's cgroup files itself, found through /proc/<pid>/cgroup of the container's init
    (cgroup v1 and v2; microseconds). Only when those are out of sight (a control plane in a container of
    its own) does it fall back to the engine's one-shot stats. CPU is the rate since this sampler's previous
    look at the container; on a first look, the average since the container started.
    """

    KEEP = 4096  # bound on remembered containers

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}  # container id -> (monotonic seconds, cpu ns)
        self._lock = threading.Lock()

    def sample(self, client: Any, container: Any) -> tuple[float | None, float | None]:
        state = (container.attrs or {}).get("State") or {}
        usage = _cgroup_usage(int(state.get("Pid") or 0))
        if usage is None:
            usage = _engine_usage(client, container.id)
        cpu_ns, memory = usage
        if cpu_ns is None:
            return None, memory
        now = time.monotonic()
        with self._lock:
            previous = self._last.get(container.id)
            if len(self._last) >= self.KEEP:
                self._last.clear()
            self._last[container.id] = (now, cpu_ns)
        if previous is not None and now - previous[0] > 0.01:
            return round(max(0, cpu_ns - previous[1]) / 1e9 / (now - previous[0]) * 100.0, 2), memory
        started = _parse_time(state.get("StartedAt", ""))
        elapsed = time.time() - started if started is not None else 0.0
        return (round(cpu_ns / 1e9 / elapsed * 100.0, 2) if elapsed > 0 else None), memory

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._last.pop(container_id, None)


def _cgroup_usage(pid: int) -> tuple[int | None, float | None] | None:
    """(cpu ns, memory MiB) from the cgroup files of process `pid`, or None when they cannot be read."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    root = "/sys/fs/cgroup"
    try:
        if "memory" in paths:  # v1: one hierarchy per controller
            memory_dir = f"{root}/memory{paths['memory']}"
            usage = _read_int(f"{memory_dir}/memory.usage_in_bytes")
            cache = _stat_field(f"{memory_dir}/memory.stat", "total_inactive_file")
            cpu_ns = (
                _read_int(f"{root}/cpuacct{paths['cpuacct']}/cpuacct.usage") if "cpuacct" in paths else None
            )
        elif "" in paths:  # v2: one unified hierarchy
            unified = f"{root}{paths['']}"
            usage = _read_int(f"{unified}/memory.current")
            cache = _stat_field(f"{unified}/memory.stat", "inactive_file")
            usec = _stat_field(f"{unified}/cpu.stat", "usage_usec")
            cpu_ns = usec * 1000 if usec is not None else None
        else:
            return None
    except (OSError, ValueError):
        return None
    if cache is not None and cache < usage:
        usage -= cache
    return cpu_ns, round(usage / MIB, 2)


def _engine_usage(client: Any, container_id: str) -> tuple[int | None, float | None]:
    try:
        stats = client.api.stats(container_id, stream=False, one_shot=True)
    except Exception:  # usage is informative; a container that just exited has none
        return None, None
    total = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory_stats = stats.get("memory_stats") or {}
    usage = memory_stats.get("usage")
    memory = None
    if isinstance(usage, int):
        detail = memory_stats.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        memory = round((usage - cache if isinstance(cache, int) and cache < usage else usage) / MIB, 2)
    return (total if isinstance(total, int) else None), memory


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as fh:
        return int(fh.read().strip())


def _stat_field(path: str, name: str) -> int | None:
    with open(path, encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    return None


_TIME = re.compile(r"\A(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)\Z")


def _parse_time(text: str) -> float | None:
    """Parse the engine's RFC 3339 timestamps, which carry nanoseconds (more than datetime accepts)."""
    match = _TIME.match(text or "")
    if not match:
        return None
    base, fraction, zone = match.groups()
    parsed = dt.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    if parsed.year < 1970:  # "0001-01-01T00:00:00Z": never started
        return None
    return parsed.timestamp() + (float("0." + fraction) if fraction else 0.0)


def remove_container(client: Any, ref: str, timeout: float = 10.0) -> None:
    """Kill and remove a container with its anonymous volumes; absent is fine, a removal in progress is awaited."""
    try:
        client.api.remove_container(ref, force=True, v=True)
        return
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise engine_failure(exc, f"cannot remove container {ref}") from exc
    except Exception as exc:
        raise engine_failure(exc, f"cannot remove container {ref}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.api.inspect_container(ref)
        except docker.errors.NotFound:
            return
        except Exception as exc:
            raise engine_failure(exc, f"cannot remove container {ref}") from exc
        time.sleep(0.05)
    raise RuntimeFailure(f"container {ref} was still being removed after {timeout:g} s")


def logs_tail(container: Any, limit: int = 2000) -> str:
    """The container's last output lines, for error messages; empty when there is none to get."""
    if container is None:
        return ""
    try:
        text = container.logs(stdout=True, stderr=True, tail=30).decode("utf-8", "replace").strip()
    except Exception:  # the container may be gone already; the logs are a courtesy
        return ""
    return f"\ncontainer output:\n{text[-limit:]}" if text else ""
